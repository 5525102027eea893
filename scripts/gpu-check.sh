#!/usr/bin/env bash
# The CUDA backend's proof on a GPU machine that has a driver but none of this project's
# libraries and no network, in two halves:
#
#   scripts/gpu-check.sh bundle [DIR]   on a development machine (CUDA toolkit at
#                                       /usr/local/cuda): builds the `gpu` tests and `xlstm`,
#                                       and copies them with every shared library they load
#                                       (but the driver's libcuda; ICU's data table xz-packed),
#                                       the dynamic loader, the goldens and this script into DIR
#                                       (default gpu-bundle/, git-ignored; checked <= 60 MiB).
#   DIR/gpu-check.sh run [OUT]          on the GPU machine, from the bundle: the gpu tests with
#                                       XLSTMD_REQUIRE_GPU=1 (a skip is a failure there), then
#                                       `xlstm bench --backend cuda --synthetic 1b|7b` (decode
#                                       batch 1/8/64/256, prefill 2k/16k) under --cuda-math
#                                       exact and bf16, then one summary table with each line's
#                                       per-op split. Results go to OUT (default $OUT, else
#                                       DIR/out).
#
# The binaries run under the bundled loader (lib/ld-linux-x86-64.so.2 --library-path lib), so
# the GPU machine's older or newer glibc and libstdc++ do not matter; only libcuda.so.1 and
# CUDA 13's libcublasLt.so.13 (its toolkit's or its Python's nvidia-cublas) come from the
# machine. Exit status: 0 when the tests passed and every bench line was produced.
set -euo pipefail

usage() {
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

bundle() {
  local repo out
  repo="$(cd "$(dirname "$0")/.." && pwd)"
  out="${1:-$repo/gpu-bundle}"
  cd "$repo"
  if [ ! -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then
    echo "gpu-check bundle: no nvcc (CUDA toolkit) on this machine; the bundle needs it" >&2
    exit 1
  fi
  if [ ! -f build/build.ninja ]; then
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DXLSTMD_ENABLE_CUDA=ON
  fi
  if ! grep -q '^XLSTMD_ENABLE_CUDA:STRING=\(ON\|AUTO\)' build/CMakeCache.txt ||
     ! grep -q 'xlstmd CUDA backend: ON' <(cmake build 2>&1); then
    echo "gpu-check bundle: build/ was configured without the CUDA backend" >&2
    exit 1
  fi
  cmake --build build --target gpu_test xlstm -j"$(nproc)"
  rm -rf "$out"
  mkdir -p "$out/bin" "$out/lib" "$out/shared"
  cp build/bin/gpu_test build/bin/xlstm "$out/bin/"
  cp "$0" "$out/gpu-check.sh"
  # Every library the two binaries load, resolved on this machine, except the kernel's vdso
  # and the driver (libcuda comes from the GPU machine, matching its kernel module).
  local lib
  for lib in $(ldd build/bin/gpu_test build/bin/xlstm | awk '/=>/ {print $3} /^[ \t]*\// {print $1}' |
               sort -u); do
    case "$(basename "$lib")" in
      # cuBLASLt (540 MB) comes from the GPU machine's CUDA 13, as the driver does.
      libcuda.so*|linux-vdso*|libcublas.so*|libcublasLt.so*) ;;
      # ICU's 31 MB data table (the tokenizer's; xz: 7 MB) would break the size limit.
      libicudata.so*) xz -9 -T"$(nproc)" -c "$lib" > "$out/lib/$(basename "$lib").xz" ;;
      *) cp -L "$lib" "$out/lib/" ;;
    esac
  done
  cp -r "$repo/../shared/golden" "$out/shared/golden"
  local size_mib
  size_mib=$(du -sm "$out" | cut -f1)
  if [ "$size_mib" -gt 60 ]; then
    echo "gpu-check bundle: $out is ${size_mib} MiB, over the 60 MiB limit" >&2
    exit 1
  fi
  echo "gpu-check bundle: $out (${size_mib} MiB); on the GPU machine run: $out/gpu-check.sh run"
}

run() {
  local here results loader status=0
  here="$(cd "$(dirname "$0")" && pwd)"
  results="${1:-${OUT:-$here/out}}"
  mkdir -p "$results"
  cd "$here"
  # Compressed libraries unpack into the results folder (the bundle may be read-only).
  mkdir -p "$results/lib"
  local packed
  for packed in lib/*.xz; do
    [ -e "$packed" ] || continue
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$packed" "$results/lib/$(basename "${packed%.xz}")"
  done
  # cuBLASLt from the machine: its CUDA toolkit, the loader's cache, else the CUDA 13 wheels
  # of its Python (nvidia/cu13/lib; older wheels nvidia/cublas/lib).
  local cublas_dir="" dir
  for dir in "${CUDA_HOME:-/usr/local/cuda}/lib64" "${CUDA_HOME:-/usr/local/cuda}/lib" \
      /usr/local/cuda/targets/x86_64-linux/lib \
      "$(ldconfig -p 2>/dev/null | awk '/libcublasLt\.so\.13 / {print $NF; exit}' | xargs -r dirname)" \
      $(python3 -c 'import nvidia, os
for p in nvidia.__path__:
    print(os.path.join(p, "cu13", "lib"), os.path.join(p, "cublas", "lib"))' 2>/dev/null); do
    if [ -n "$dir" ] && [ -e "$dir/libcublasLt.so.13" ]; then cublas_dir=$dir; break; fi
  done
  if [ -z "$cublas_dir" ]; then
    echo "gpu-check run: no libcublasLt.so.13 (CUDA 13 cuBLAS) on this machine" >&2
    exit 1
  fi
  loader=("$here/lib/ld-linux-x86-64.so.2" --library-path "$here/lib:$results/lib:$cublas_dir")
  export XLSTMD_SHARED_DIR="$here/shared" XLSTMD_REQUIRE_GPU=1
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv | tee "$results/nvidia-smi.csv"

  echo "== gpu tests"
  if ! "${loader[@]}" bin/gpu_test --gtest_brief=1 2>&1 | tee "$results/gpu_test.txt"; then
    status=1
  fi

  local shape math
  for shape in 1b 7b; do
    for math in exact bf16; do
      echo "== bench $shape --cuda-math $math"
      if ! "${loader[@]}" bin/xlstm bench --backend cuda --synthetic "$shape" \
          --cuda-math "$math" --batch 1,8,64,256 --prompt-len 2048,16384 --min-time 1s \
          > "$results/bench_${shape}_$math.jsonl" 2> "$results/bench_${shape}_$math.err"; then
        cat "$results/bench_${shape}_$math.err" >&2
        status=1
      fi
    done
  done

  echo "== summary"
  python3 - "$results" <<'PY' | tee "$results/summary.txt"
import json, os, sys
out = sys.argv[1]
print(f"{'model':6} {'math':6} {'phase':8} {'size':>6} {'tok/s':>10} {'ms':>9} {'GB/s':>8} "
      f"{'GFLOP/s':>9} {'bound':8} {'roofline':>8}  split (ms: gemm/mlstm/rowops/gaps)")
for shape in ("1b", "7b"):
    for math in ("exact", "bf16"):
        path = os.path.join(out, f"bench_{shape}_{math}.jsonl")
        if not os.path.exists(path):
            continue
        for line in open(path):
            j = json.loads(line)
            if "limit" in j:
                print(f"{shape:6} {math:6} limit    {j['limit']}={j['value']} " +
                      " ".join(f"{k}={v}" for k, v in j.items() if k not in ("limit", "value")))
            elif j.get("phase") in ("decode", "prefill"):
                size = j["batch"] if j["phase"] == "decode" else j["prompt_len"]
                ms = j.get("ms_per_step", j.get("ms_per_prefill"))
                split = j.get("split_ms", {})
                keys = ("gemm", "mlstm", "rowops", "gaps")
                split = "/".join(str(split.get(k, "-")) for k in keys)
                print(f"{shape:6} {math:6} {j['phase']:8} {size:>6} {j['tokens_per_s']:>10} "
                      f"{ms:>9} {j['achieved_gbps']:>8} {j['achieved_gflops']:>9} "
                      f"{j['bound']:8} {j['roofline_fraction']:>8}  {split}")
PY
  return $status
}

case "${1:-}" in
  bundle) shift; bundle "$@" ;;
  run) shift; run "$@" ;;
  *) usage ;;
esac
