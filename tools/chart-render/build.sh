#!/usr/bin/env bash
# Builds chart-render from Debian's Go packages (golang-go, golang-github-masterminds-sprig-dev,
# golang-k8s-sigs-yaml-dev, golang-github-xeipuuv-gojsonschema-dev; scripts/bootstrap.sh
# installs them), offline, into BUILD_DIR/chart-render/chart-render; with "test", runs its Go
# tests instead.
#   build.sh BUILD_DIR [test]
# GOPATH mode: Debian installs sprig v3 at .../Masterminds/sprig (no /v3), which Go resolves
# only for a package inside a GOPATH src tree with a go.mod (shared/BUILD.md section 7).
set -euo pipefail
BUILD=$(mkdir -p "$1" && cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
command -v go >/dev/null || { echo "FAIL: go not found (scripts/bootstrap.sh installs golang-go)"; exit 1; }
OUT=$BUILD/chart-render
SRC=$OUT/gopath/src/chartrender
mkdir -p "$SRC"
# Only our own sources travel; a stale copy of a deleted file must not linger.
rm -f "$SRC"/*.go
cp "$HERE"/*.go "$HERE/go.mod" "$SRC/"
export GO111MODULE=off GOPATH=$OUT/gopath:/usr/share/gocode GOPROXY=off GOFLAGS=
export GOCACHE=${GOCACHE:-$OUT/gocache}
cd "$SRC"
if [ "${2:-}" = test ]; then
  exec go test -count=1 .
fi
go build -o "$OUT/chart-render.tmp" . && mv "$OUT/chart-render.tmp" "$OUT/chart-render"
