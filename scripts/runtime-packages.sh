#!/usr/bin/env bash
# Prints the Debian packages that own the shared libraries the given binaries load, one per
# line, sorted: the container image's runtime package list, derived from what was built rather
# than kept by hand. Fails naming the library when one belongs to no package (a library from
# outside apt would be missing at run time).
#   scripts/runtime-packages.sh [--skip PREFIX]... BINARY...
# --skip leaves out libraries under PREFIX (tests/deploy: a CUDA toolkit unpacked from NVIDIA's
# tarball, where the image installs NVIDIA's packages instead).
set -euo pipefail
skips=()
while [ "${1:-}" = --skip ]; do
  [ $# -ge 2 ] || { echo "runtime-packages.sh: --skip needs a PREFIX" >&2; exit 2; }
  skips+=("$2")
  shift 2
done
[ $# -gt 0 ] || { echo "usage: runtime-packages.sh [--skip PREFIX]... BINARY..." >&2; exit 2; }
owner() {  # the package owning file $1, trying its /usr-merged spellings
  local f=$1 real alt
  real=$(readlink -f "$f")
  for alt in "$f" "$real" "${f#/usr}" "/usr$f" "${real#/usr}" "/usr$real"; do
    if out=$(dpkg-query -S "$alt" 2>/dev/null); then
      echo "${out%%: *}" | tr ',' '\n' | sed 's/^ *//; s/:.*$//'
      return 0
    fi
  done
  return 1
}
libs=$(for b in "$@"; do
  [ -x "$b" ] || { echo "runtime-packages.sh: $b is not an executable" >&2; exit 1; }
  ldd "$b" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}'
done | sort -u)
for l in $libs; do
  for p in ${skips[@]+"${skips[@]}"}; do
    [ "${l#"$p"}" = "$l" ] || continue 2
  done
  owner "$l" || { echo "runtime-packages.sh: $l belongs to no Debian package" >&2; exit 1; }
done | sort -u
