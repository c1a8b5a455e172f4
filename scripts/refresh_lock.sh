#!/usr/bin/env bash
# Refresh the lock (constraints.txt) from the newest releases pyproject.toml's ranges admit, and keep
# it only if the whole suite passes on them:
#   1. a fresh virtualenv and an empty emtbench cache in a temporary folder;
#   2. scripts/install.sh --test with EMTBENCH_UNLOCKED=1 (newest releases, no lock);
#   3. scripts/test.sh (ruff + the whole suite);
#   4. pip freeze of that virtualenv (emtbench itself left out) becomes constraints.txt.
# On a failure constraints.txt is left as it was and the failing suite's output is above: fix the code
# (the project must work on the newest releases), not the lock. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
EMTBENCH_UNLOCKED=1 bash scripts/install.sh --test
EMTBENCH_CACHE_DIR="$work/cache" bash scripts/test.sh "$@"
{
  echo "# The lock: exact versions of every dependency the test suite passed with."
  echo "# Made by scripts/refresh_lock.sh on $(date -u +%Y-%m-%d), $(python3 -c 'import platform; print("CPython", platform.python_version(), platform.machine())')."
  echo "# Used as pip constraints by scripts/install.sh (and so by CI). Do not edit by hand."
  python3 -m pip freeze --exclude-editable --exclude emtbench | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' | LC_ALL=C sort -f
} > "$work/constraints.txt"
if diff -u constraints.txt "$work/constraints.txt"; then
  echo "refresh_lock.sh: the lock is current"
else
  cp "$work/constraints.txt" constraints.txt
  echo "refresh_lock.sh: constraints.txt updated (diff above); commit it"
fi
