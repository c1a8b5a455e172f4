"""Running lm-evaluation-harness with the EMT tasks and emtbench's lm-eval models."""

from __future__ import annotations

import sys

from emtbench.tasks import TASKS_DIR


def run_lm_eval(argv: list[str]) -> int:
    """Run lm_eval's own CLI in this process, with the EMT task folder included."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from emtbench.models.registration import register_lm_eval_models

    register_lm_eval_models()

    saved_argv = sys.argv
    sys.argv = ["lm_eval", *argv]
    try:
        setup_logging()
        cli = HarnessCLI()
        parsed = cli.parse_args()
        if hasattr(parsed, "include_path"):
            user_path = parsed.include_path
            parsed.include_path = [user_path, str(TASKS_DIR)] if user_path else str(TASKS_DIR)
        cli.execute(parsed)
    finally:
        sys.argv = saved_argv
    return 0
