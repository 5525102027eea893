#!/usr/bin/env bash
# Installs the Debian 12 packages xlstmd needs and builds a Release tree into build/
# (binaries in build/bin/). Idempotent and non-interactive: safe to re-run.
#   scripts/bootstrap.sh               everything for building and testing, then the build
#   scripts/bootstrap.sh --deps build  only the packages the daemon and tool build needs, no
#                                      build (the Dockerfile's build stage)
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=all
case "${1:-}" in
  "") ;;
  --deps)
    [ "${2:-}" = build ] || { echo "bootstrap.sh: --deps takes 'build'" >&2; exit 2; }
    MODE=build-deps ;;
  *) echo "bootstrap.sh: unknown argument '$1' (usage: bootstrap.sh [--deps build])" >&2; exit 2 ;;
esac

# What compiling xlstmd and xlstm needs (the Dockerfile derives the runtime packages from the
# binaries it builds with these).
BUILD_PKGS=(
  cmake ninja-build pkg-config g++
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libxxhash-dev libpcre2-dev libicu-dev
  libhiredis-dev libssl-dev
)
PKGS=(
  "${BUILD_PKGS[@]}" ccache
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-grpcio python3-protobuf python3-yaml python3-numpy python3-regex redis-server
  prometheus
  openssl xz-utils chromium
  golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev
  golang-github-xeipuuv-gojsonschema-dev yamllint python3-jsonschema
)
# golang-* (Debian's Go sources, built offline in GOPATH mode), yamllint, python3-jsonschema:
# the Helm chart's tests render it with tools/chart-render and lint and validate the result
# (tests/deploy).
# python3-numpy, python3-regex: the demo model's tests (tests/e2e/test_demo_model.py reads
# logits; tests/train runs tools/train's tokenizer trainer, which splits with \p{L}).
# chromium: tests/web/browser_test.cjs drives it headless (playwright-core from npm, pinned in
# tests/web/package-lock.json and installed into build/npm-web by tests/web/run.sh).
# openssl: tests/e2e/test_tls.py makes its certificates with the CLI at run time. xz-utils:
# scripts/gpu-check.sh packs ICU's data table into the GPU bundle.
# prometheus: the tests run promtool and their own Prometheus server on a free loopback port
# (tests/e2e/test_metrics.py, test_prometheus.py). On a systemd machine the package also
# starts a system service on :9090 that nothing here uses (`systemctl disable --now
# prometheus` if unwanted).
# Never add kubernetes-client here: it conflicts with the preinstalled kubectl and
# makes the whole apt line fail (BUILD.md gotcha 1).

. scripts/apt-install.sh
if [ "$MODE" = build-deps ]; then
  apt_install_missing "${BUILD_PKGS[@]}"
  exit 0
fi
apt_install_missing "${PKGS[@]}"

# The tokenizer's differential test runs the npm package @huggingface/tokenizers under node.
# Machines that already have node from elsewhere (e.g. nodesource, which bundles npm) keep it:
# Debian's npm package would conflict with that node.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi

BUILD_TYPE="${XLSTMD_BUILD_TYPE:-Release}"
WERROR="${XLSTMD_WERROR:-OFF}"
[ "${CI:-}" = "true" ] && WERROR=ON
LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DXLSTMD_WERROR="$WERROR" "${LAUNCHER[@]}"
fi
cmake --build build -j"$(nproc)"

# `build/bin/xlstmd` with no --model serves models/demo: a small xLSTM trained by
# tools/train on Debian-packaged text (models/demo/README.md), committed with the repository.
# Random models for tests and benchmarks come from `build/bin/xlstm mkmodel`.
if [ ! -f models/demo/config.json ]; then
  echo "bootstrap: models/demo is missing from this checkout (git checkout models/demo)" >&2
  exit 1
fi
