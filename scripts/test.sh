#!/usr/bin/env bash
# The test command: lint, then the whole suite (offline; tiny models built by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check emtbench tests scripts
python3 -m pytest -q "$@"
