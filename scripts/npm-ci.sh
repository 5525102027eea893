# Sourced by the tests that run npm packages (tests/web/run.sh, tests/deploy/kube-types/run.sh):
#   npm_ci_into DIR SRC   installs SRC/package-lock.json's exact packages into DIR (a build
#                         tree, never the repository), unless DIR already holds that lock.
npm_ci_into() {
  local dir=$1 src=$2
  cmp -s "$src/package-lock.json" "$dir/package-lock.json" && return 0
  mkdir -p "$dir"
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || {
    rm -f "$dir/package-lock.json"  # a half-installed tree is retried next time
    echo "FAIL: npm ci in $dir failed"
    return 1
  }
}
