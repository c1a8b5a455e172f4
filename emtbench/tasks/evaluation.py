"""Running lm-evaluation-harness with the EMT tasks and emtbench's lm-eval models."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from emtbench.core.errors import EmtbenchError
from emtbench.tasks import TASKS_DIR


def option_value(argv: list[str], *names: str) -> str | None:
    """The last value given to one of ``names`` (``--limit 5`` or ``--limit=5``)."""
    found = None
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                found = argv[index + 1]
            elif arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


def check_limit(argv: list[str]) -> None:
    """lm-eval's ``--limit``: a count ≥ 1 or a fraction in (0, 1); 0 or less crashes mid-run."""
    value = option_value(argv, "--limit", "-L")
    if value is None:
        return
    try:
        limit = float(value)
    except ValueError:
        limit = float("nan")
    if not limit > 0 or limit == float("inf") or (limit >= 1 and not limit.is_integer()):
        raise EmtbenchError(
            f"--limit must be a number of documents (1, 2, ...) or a fraction in (0, 1), got {value!r}",
            where="--limit",
            fix="e.g. --limit 100 (the first 100 documents of each task) or --limit 0.1",
        )


def check_eval_arguments(argv: list[str], tasks: list[str]) -> None:
    """What in lm-eval arguments would only fail mid-run: ``--limit``, ``--metadata`` (EMT tasks)."""
    from emtbench.tasks.runtime import check_metadata_keys, cli_metadata

    check_limit(argv)
    metadata = cli_metadata(argv)  # malformed --metadata: a named error whatever the tasks
    if metadata and any(task.startswith("emt") for task in tasks):
        check_metadata_keys(metadata)


def run_lm_eval(argv: list[str]) -> int:
    """Run lm_eval's own CLI in this process, with the EMT task folder included.

    URL credentials in ``--metadata`` are handed to lm-eval redacted (it copies metadata into the
    results file), and any that reach a results file some other way (``--model_args``) are scrubbed
    from it after the run.
    """
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from emtbench.models.registration import register_lm_eval_models
    from emtbench.tasks.runtime import hide_metadata_secrets

    register_lm_eval_models()

    saved_argv = sys.argv
    sys.argv = ["lm_eval", *hide_metadata_secrets(argv)]
    started = time.time()
    try:
        setup_logging()
        cli = HarnessCLI()
        parsed = cli.parse_args()
        if hasattr(parsed, "include_path"):
            user_path = parsed.include_path
            parsed.include_path = [user_path, str(TASKS_DIR)] if user_path else str(TASKS_DIR)
        try:
            cli.execute(parsed)
        except ValueError as error:
            if str(error).startswith("Tasks not found"):
                raise EmtbenchError(
                    str(error),
                    where="--tasks",
                    fix="list the EMT tasks with `emtbench eval --help` and lm-eval's with "
                    "`lm_eval ls tasks`; task names are comma-separated with no spaces",
                ) from None
            raise
        output_path = getattr(parsed, "output_path", None)
        if output_path:
            scrub_results_files(Path(output_path), since=started)
    finally:
        sys.argv = saved_argv
    return 0


def scrub_results_files(output_path: Path, *, since: float) -> list[Path]:
    """Redact URL credentials in the results files lm-eval wrote under ``output_path`` this run."""
    from emtbench.core.fsutil import write_text_atomically
    from emtbench.core.secrets import has_secret, redact_text

    scrubbed = []
    folder = output_path if output_path.is_dir() else output_path.parent
    for path in folder.rglob("results_*.json") if folder.is_dir() else ():
        try:
            if path.stat().st_mtime < since - 1:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if has_secret(text):
            write_text_atomically(path, redact_text(text))
            scrubbed.append(path)
    return scrubbed
