# Sourced by scripts/bootstrap.sh and tools/train/setup.sh (Debian 12 only):
#   apt_install_missing PKG...
# installs those of the packages that are not installed yet, non-interactively, through sudo
# when not root; does nothing (and needs no network) when all are there.
apt_install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}
