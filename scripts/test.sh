#!/usr/bin/env bash
# The test command: lint, then the fast tier (no lm-eval run, no Trainer, no training; failures show
# early), then the slow tier (end-to-end runs through lm-eval and the Trainer). Offline throughout:
# tiny models built by the tests, checked-in lm-eval output in tests/fixtures/.
# Extra arguments go to both pytest runs (e.g. scripts/test.sh -x).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check emtbench tests scripts
python3 -m pytest -q -m "not slow" "$@"
python3 -m pytest -q -m slow "$@"
