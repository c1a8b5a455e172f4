"""Shared machinery of the bad-input suite (tests/test_bad_input_*.py): run a case, classify, count.

Every case feeds one bad input (or fault) to emtbench through its public behaviour (the CLI or a
public function) and classifies what happened, as the issue's table does:

- ``named``: an :class:`EmtbenchError` (or a CLI exit 2 with ``error:``), what we want for bad input;
- ``handled``: a fault emtbench is meant to absorb (a judge reply, a killed save) and did, correctly;
- ``traceback``: any other exception escaped;
- ``silent``: the input was accepted and something came out wrong (or nothing complained at all);
- ``lost``: it failed, and the failure changed or removed a file that existed before, or came only
  after paid-for work (training, judge calls) that is now wasted;
- ``executed``: the input ran code (a sentinel file appeared).

With ``EMTBENCH_BAD_INPUT_TALLY=PATH`` set, the counts per area are written there as JSON when the
test process exits (``scripts/bad_input_table.py`` prints them as the table of the issue).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError

KINDS = ("named", "handled", "traceback", "silent", "lost", "executed")
_TALLY: dict[str, Counter] = defaultdict(Counter)
_CASES: list[dict[str, str]] = []


def record(area: str, case: str, kind: str, detail: str = "") -> None:
    assert kind in KINDS, kind
    _TALLY[area][kind] += 1
    _CASES.append({"area": area, "case": case, "kind": kind, "detail": detail[:300]})


def _dump() -> None:
    target = os.environ.get("EMTBENCH_BAD_INPUT_TALLY")
    if target and _CASES:
        Path(target).write_text(json.dumps({"areas": _TALLY, "cases": _CASES}, indent=1, default=dict))


atexit.register(_dump)


def snapshot(paths: Iterable[Path]) -> dict[str, str | None]:
    """Content hashes of every file under ``paths`` (None for a path that does not exist)."""
    found: dict[str, str | None] = {}
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        if not root.exists():
            found[str(root)] = None
        for path in files:
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_cli(*argv: str) -> tuple[int, str]:
    """``emtbench ARGV`` in this process: exit code and stderr (argparse's SystemExit included)."""
    from emtbench.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, err.getvalue()


class CLIError(EmtbenchError):
    """A CLI run that ended with exit 2 and a one-line ``error:`` (what a named error looks like)."""


def cli(*argv: str) -> Callable[[], Any]:
    """A case body that runs the CLI and raises :class:`CLIError` when it refused with a named error."""

    def call() -> int:
        code, stderr = run_cli(*argv)
        if code == 2 and "error:" in stderr and "Traceback" not in stderr:
            raise CLIError(stderr.strip())
        return code

    return call


def expect_refusal(
    area: str,
    case: str,
    call: Callable[[], Any],
    *,
    match: str | None = None,
    protect: Iterable[Path] = (),
    sentinel: Path | None = None,
    nothing_wasted: Callable[[], bool] | None = None,
) -> EmtbenchError:
    """Run ``call``: it must fail with a named error, leave ``protect`` unchanged and run no code.

    ``nothing_wasted`` says whether the refusal came before paid-for work (judge calls, training);
    when it returns False the case counts as ``lost``.
    """
    protect = list(protect)
    before = snapshot(protect)
    error: BaseException | None = None
    kind = "silent"
    try:
        call()
    except EmtbenchError as raised:
        error, kind = raised, "named"
    except Exception as raised:
        error, kind = raised, "traceback"
    if sentinel is not None and sentinel.exists():
        kind = "executed"
    elif error is not None and (
        snapshot(protect) != before or (nothing_wasted is not None and not nothing_wasted())
    ):
        kind = "lost"  # it failed, and the failure destroyed files or came after paid-for work
    record(area, case, kind, f"{type(error).__name__}: {error}" if error else "accepted")
    assert kind == "named", f"{case}: expected a named error, got {kind}: {error!r}"
    assert isinstance(error, EmtbenchError)
    if match is not None:
        import re

        assert re.search(match, str(error), re.IGNORECASE | re.DOTALL), f"{case}: {error}"
    return error


def expect_handled(area: str, case: str, call: Callable[[], bool], *, protect: Iterable[Path] = ()) -> None:
    """Run ``call``, which returns whether emtbench absorbed the fault correctly; no exception may escape."""
    protect = list(protect)
    before = snapshot(protect)
    detail = ""
    try:
        correct = bool(call())
        kind = "handled" if correct else "silent"
    except EmtbenchError as raised:  # a named error where the fault should have been absorbed
        kind, detail = "named", str(raised)
    except AssertionError as raised:  # the case's own checks: emtbench returned, with the wrong result
        detail = str(raised)
        kind = "traceback" if "Traceback (most recent call last)" in detail else "silent"
    except Exception as raised:
        kind, detail = "traceback", f"{type(raised).__name__}: {raised}"
    if snapshot(protect) != before:
        kind = "lost"
    record(area, case, kind, detail)
    assert kind == "handled", f"{case}: expected the fault to be handled, got {kind} {detail}"
