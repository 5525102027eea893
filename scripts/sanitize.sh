#!/usr/bin/env bash
# Sanitizer and fuzzing runs (issue 16): separate clang build trees at -O1, never the Release
# tree in build/. Run after scripts/bootstrap.sh; installs Debian's clang when it is missing.
# CI (.ci/run) runs all three after the Release suite.
#
#   scripts/sanitize.sh asan  [ctest args]  ASan+UBSan build of everything; the whole suite
#   scripts/sanitize.sh tsan  [ctest args]  TSan build; the engine, state and server tests
#   scripts/sanitize.sh fuzz  [SECONDS]     every libFuzzer target for SECONDS (default 60)
#                                           from its seeds, in the ASan tree
#
# Any sanitizer report fails the run: reports are fatal (halt_on_error / -fno-sanitize-recover)
# and a process that reported exits non-zero, so the test that started it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
shift || true
case "$mode" in asan|tsan|fuzz) ;; *)
  echo "usage: scripts/sanitize.sh asan|tsan|fuzz [args]" >&2
  exit 2
esac

# clang 14 (Debian 12) brings libFuzzer and the sanitizer runtimes (libclang-common-14-dev).
if ! command -v clang++ >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends clang
fi
jobs="$(nproc)"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

configure() {  # DIR SANITIZER FUZZ
  if [ ! -f "$1/build.ninja" ]; then
    CC=clang CXX=clang++ cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=None \
      -DCMAKE_CXX_FLAGS="-O1 -gline-tables-only" -DXLSTMD_SANITIZE="$2" -DXLSTMD_FUZZ="$3" \
      -DXLSTMD_ENABLE_CUDA=OFF "${launcher[@]}"
  fi
}

# Debian's libraries are not instrumented: the suppressions name the reports that come from
# inside them (each entry says why).
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0:strict_string_checks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/sanitizers/tsan.supp${TSAN_OPTIONS:+:$TSAN_OPTIONS}"

case "$mode" in
  asan)
    configure build-asan address ON
    cmake --build build-asan -j"$jobs"
    exec ctest --test-dir build-asan --output-on-failure -j"$jobs" -LE gpu "$@"
    ;;
  tsan)
    configure build-tsan thread OFF
    cmake --build build-tsan -j"$jobs" --target engine_test state_test server_test
    exec ctest --test-dir build-tsan --output-on-failure -j"$jobs" -L '^(engine|state|server)$' "$@"
    ;;
  fuzz)
    seconds="${1:-60}"
    configure build-asan address ON
    targets=(config safetensors tokenizer chat_template snapshot chat_request http_request)
    cmake --build build-asan -j"$jobs" --target "${targets[@]/#/fuzz_}"
    failed=()
    for t in "${targets[@]}"; do
      work="build-asan/fuzz-runs/$t"
      rm -rf "$work" && mkdir -p "$work/corpus" "$work/artifacts"
      XLSTMD_FUZZ_WRITE_SEEDS="$work/corpus" "build-asan/bin/fuzz_$t"
      echo "== fuzz_$t: ${seconds}s"
      # -max_len caps mutations (seeds longer than it are cut); -timeout and -rss_limit_mb turn
      # hangs and memory blow-ups into findings. Crashes land in $work/artifacts: copy one
      # into tests/fuzz/regressions/$t/ once fixed.
      if ! "build-asan/bin/fuzz_$t" -max_total_time="$seconds" -max_len=65536 -timeout=20 \
          -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
          "$work/corpus" >"$work/log" 2>&1; then
        failed+=("$t")
        tail -n 60 "$work/log"
      else
        grep -E "^stat::number_of_executed_units|^stat::new_units_added|^Done" "$work/log" || true
      fi
    done
    if ((${#failed[@]})); then
      echo "fuzzing found problems in: ${failed[*]} (inputs under build-asan/fuzz-runs/*/artifacts)"
      exit 1
    fi
    echo "fuzzing: ${#targets[@]} targets x ${seconds}s without a finding"
    ;;
  *)
    echo "usage: scripts/sanitize.sh asan|tsan|fuzz [args]" >&2
    exit 2
    ;;
esac
