"""Write a method's checkpoint the same way every time: atomically, with its run record (and card).

Every method (fine-tuning, Model Tailor, DARE, ...) ends in :func:`write_model_dir`, so outputs are
loadable by ``hf-multimodal`` with no extra code, never half-written, and carry ``emtbench_run.json``.
The model card is written by a function the caller passes (:func:`emtbench.hub.cards.model_card`), so
this bottom layer knows nothing of the Hub.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.fsutil import staged_directory
from emtbench.core.paths import check_writable_dir
from emtbench.core.readers import read_json

RUN_FILE = "emtbench_run.json"
CARD_FILE = "README.md"


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("emtbench", "torch", "transformers", "peft", "accelerate", "lm_eval", "datasets"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def check_output_dir(output_dir: Path, run: dict[str, Any], *, overwrite: bool) -> None:
    """Refuse to replace a directory holding something else unless asked; call before any work."""
    check_writable_dir(output_dir, flag="--output")  # a file, or a folder we cannot write: refuse now
    if not output_dir.exists() or overwrite:
        return
    if not any(output_dir.iterdir()):
        return
    previous = output_dir / RUN_FILE
    if previous.is_file():
        old = read_json(previous, what="run record", fix="pass --overwrite to replace the folder")
        if not isinstance(old, dict):
            raise EmtbenchError("not an emtbench run record", where=str(previous), fix="pass --overwrite")
        if {k: old.get(k) for k in ("method", "settings", "base_model")} == {
            k: run.get(k) for k in ("method", "settings", "base_model")
        }:
            return
        raise EmtbenchError(
            f"{output_dir} already holds a different run (method {old.get('method')!r})",
            where="--output",
            fix="pass --overwrite to replace it, or choose another --output",
        )
    raise EmtbenchError(
        f"{output_dir} is not empty and holds no emtbench run",
        where="--output",
        fix="choose an empty or new directory, or pass --overwrite",
    )


def write_model_dir(
    output_dir: str | Path,
    save: Callable[[Path], None],
    run: dict[str, Any],
    *,
    overwrite: bool = False,
    card: Callable[[dict[str, Any]], str] | None = None,
) -> Path:
    """Save into a temporary sibling folder, add the run record and ``card(record)``, then rename into place."""
    output_dir = Path(output_dir)
    check_output_dir(output_dir, run, overwrite=overwrite)
    with staged_directory(output_dir) as staging:
        save(staging)
        record = {
            "emtbench_run_version": 1,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **run,
            "versions": package_versions(),
        }
        (staging / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        if card is not None:
            (staging / CARD_FILE).write_text(card(record))
    return output_dir


@dataclass
class WrittenModel:
    """A model folder a method wrote: where it is, its run record, and the Hub URL if it was pushed."""

    output: Path
    record: dict[str, Any]
    hub_url: str | None = None
