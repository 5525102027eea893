#!/usr/bin/env bash
# Installs what tools/train needs (Debian 12 packages only): PyTorch, OpenBLAS and numpy.
# Not part of scripts/bootstrap.sh: serving and the tests never need PyTorch.
# OpenBLAS matters: python3-torch alone leaves netlib's reference BLAS as libblas.so.3, and
# training then runs ~20x slower.
set -euo pipefail
PKGS=(python3-torch libopenblas0-pthread python3-numpy python3-regex)
. "$(dirname "$0")/../../scripts/apt-install.sh"
apt_install_missing "${PKGS[@]}"
/usr/bin/python3 -c 'import torch, numpy, regex; print("tools/train: torch", torch.__version__)'
