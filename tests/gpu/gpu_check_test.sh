#!/usr/bin/env bash
# scripts/gpu-check.sh end to end on this machine: the bundle stays under 60 MiB and its
# binaries start under the bundled loader; `run` then fails without a GPU (the tests demand
# one there) having said why, or passes where a GPU is usable.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$repo/scripts/gpu-check.sh" bundle "$tmp/bundle" > "$tmp/bundle.log" 2>&1 || {
  cat "$tmp/bundle.log"; exit 1; }
size=$(du -sm "$tmp/bundle" | cut -f1)
[ "$size" -le 60 ] || { echo "bundle is $size MiB"; exit 1; }
for f in bin/gpu_test bin/xlstm lib/ld-linux-x86-64.so.2 gpu-check.sh shared/golden; do
  [ -e "$tmp/bundle/$f" ] || { echo "bundle lacks $f"; exit 1; }
done
if "$tmp/bundle/gpu-check.sh" run "$tmp/out" > "$tmp/run.log" 2>&1; then
  echo "run passed: a GPU is usable here"
  exit 0
fi
# No GPU: the tests ran (under the bundled loader) and failed saying why.
grep -q "XLSTMD_REQUIRE_GPU=1: " "$tmp/out/gpu_test.txt" || { cat "$tmp/run.log"; exit 1; }
grep -q "^model " "$tmp/out/summary.txt" || { cat "$tmp/run.log"; exit 1; }
echo "run failed as it must without a GPU: $(grep -m1 'XLSTMD_REQUIRE_GPU' "$tmp/out/gpu_test.txt")"
