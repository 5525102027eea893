#!/usr/bin/env bash
# Type-checks (tsc --strict) and validates every object of the chart's committed goldens
# against kubernetes-models. The goldens equal the renderer's output (tests/deploy/test_chart.py
# checks that), so this covers what the chart renders for each ci/ values file. Installs the
# npm packages pinned in package-lock.json into the build tree, never the repository.
#   run.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
fail() { echo "FAIL: $*"; exit 1; }
command -v node >/dev/null || fail "node not found (scripts/bootstrap.sh installs nodejs)"
command -v npm >/dev/null || fail "npm not found (scripts/bootstrap.sh installs npm)"

NPM_DIR=$BUILD/npm-deploy
. "$HERE/../../../scripts/npm-ci.sh"
npm_ci_into "$NPM_DIR" "$HERE" || exit 1
WORK=$NPM_DIR/check
rm -rf "$WORK" && mkdir -p "$WORK"
shopt -s nullglob
GOLDENS=("$HERE"/../golden/*.yaml)
[ ${#GOLDENS[@]} -ge 5 ] || fail "expected the chart's goldens in tests/deploy/golden"
NODE_PATH=$NPM_DIR/node_modules node "$HERE/gen.cjs" "$WORK/check.ts" "${GOLDENS[@]}"
cat > "$WORK/tsconfig.json" <<'JSON'
{"compilerOptions": {"strict": true, "target": "ES2020", "module": "commonjs",
  "moduleResolution": "node", "esModuleInterop": true, "skipLibCheck": true,
  "noEmitOnError": true, "types": [], "outDir": "js", "typeRoots": []},
 "files": ["check.ts"]}
JSON
ln -sfn "$NPM_DIR/node_modules" "$WORK/node_modules"
(cd "$WORK" && ./node_modules/.bin/tsc -p tsconfig.json) || fail "tsc --strict rejected a rendered object (above)"
node "$WORK/js/check.js"
