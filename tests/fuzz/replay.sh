#!/usr/bin/env bash
# ctest's fuzz.<target>.replay: runs a target's seeds and its regression inputs once each.
# usage: replay.sh TARGET_BINARY FUZZ_BUILD(ON|OFF) REGRESSIONS_DIR
set -euo pipefail
bin="$1" fuzz_build="$2" regressions="$3"
inputs=()
[ -d "$regressions" ] && inputs+=("$regressions")
case "$fuzz_build" in
  ON|on|1|TRUE|true)
    # libFuzzer binary: write the seeds to a corpus directory, then execute every input once.
    seeds="$(mktemp -d)"
    trap 'rm -rf "$seeds"' EXIT
    XLSTMD_FUZZ_WRITE_SEEDS="$seeds" "$bin"
    "$bin" -runs=0 "$seeds" "${inputs[@]}"
    ;;
  *)
    "$bin" "${inputs[@]}"
    ;;
esac
