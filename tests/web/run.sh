#!/usr/bin/env bash
# The web port's tests with independent JS clients: the official OpenAI SDK and Playwright
# driving Debian's Chromium. Installs the npm packages pinned in tests/web/package-lock.json
# into the build tree (never the repository). Missing node, npm or chromium is a failure.
#   run.sh BUILD_DIR SHARED_DIR sdk|browser
set -euo pipefail
BUILD=$(cd "$1" && pwd)
SHARED=$(cd "$2" && pwd)
WHAT=$3
HERE=$(cd "$(dirname "$0")" && pwd)

fail() { echo "FAIL: $*"; exit 1; }
command -v node >/dev/null || fail "node not found (scripts/bootstrap.sh installs nodejs)"
command -v npm >/dev/null || fail "npm not found (scripts/bootstrap.sh installs npm)"
[ -x "$BUILD/bin/xlstmd" ] || fail "missing $BUILD/bin/xlstmd (build it first)"

NPM_DIR=$BUILD/npm-web
. "$HERE/../../scripts/npm-ci.sh"
npm_ci_into "$NPM_DIR" "$HERE" || exit 1
export NODE_PATH=$NPM_DIR/node_modules
export XLSTMD_BIN_DIR=$BUILD/bin XLSTMD_SHARED_DIR=$SHARED XLSTMD_BUILD_DIR=$BUILD
case "$WHAT" in
  sdk) exec node --test --test-concurrency=1 "$HERE/sdk_test.cjs" ;;
  browser)
    command -v chromium >/dev/null || fail "chromium not found (scripts/bootstrap.sh installs it)"
    exec node --test --test-concurrency=1 "$HERE/browser_test.cjs" ;;
  *) fail "unknown test set $WHAT" ;;
esac
