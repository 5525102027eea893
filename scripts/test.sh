#!/usr/bin/env bash
# Builds what is missing (after scripts/bootstrap.sh installed the packages) and runs the
# whole test suite with ctest. Extra arguments go to ctest (e.g. -R golden).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f build/build.ninja ]; then
  WERROR="${XLSTMD_WERROR:-OFF}"
  [ "${CI:-}" = "true" ] && WERROR=ON
  LAUNCHER=()
  command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${XLSTMD_BUILD_TYPE:-Release}" \
    -DXLSTMD_WERROR="$WERROR" "${LAUNCHER[@]}"
fi
cmake --build build -j"$(nproc)"
exec ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
