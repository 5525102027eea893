#!/usr/bin/env bash
# Installs what tools/train needs (Debian 12 packages only): PyTorch, OpenBLAS and numpy.
# Not part of scripts/bootstrap.sh: serving and the tests never need PyTorch.
# OpenBLAS matters: python3-torch alone leaves netlib's reference BLAS as libblas.so.3, and
# training then runs ~20x slower.
set -euo pipefail
PKGS=(python3-torch libopenblas0-pthread python3-numpy python3-regex)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
/usr/bin/python3 -c 'import torch, numpy, regex; print("tools/train: torch", torch.__version__)'
