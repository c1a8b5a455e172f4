"""Write a method's checkpoint the same way every time: atomically, with its run record and card.

Every method (fine-tuning, Model Tailor, DARE, ...) ends in :func:`write_model_dir`, so outputs are
loadable by ``hf-multimodal`` with no extra code, never half-written, and carry ``emtbench_run.json``.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from emtbench.core.paths import check_writable_dir
from emtbench.core.readers import read_json
from emtbench.errors import EmtbenchError
from emtbench.fsutil import staged_directory

RUN_FILE = "emtbench_run.json"
CARD_FILE = "README.md"
FORGETTING_START = "<!-- emtbench:forgetting:start -->"
FORGETTING_END = "<!-- emtbench:forgetting:end -->"


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
) -> Path:
    """Save into a temporary sibling folder, add the run record and card, then rename into place."""
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
        (staging / CARD_FILE).write_text(model_card(record))
    return output_dir


def model_card(record: dict[str, Any]) -> str:
    """A Hub model card that states exactly what was run; forgetting results are filled in later."""
    method = record.get("method", "unknown")
    base = record.get("base_model", "unknown")
    settings = json.dumps(record.get("settings", {}), indent=2, sort_keys=True, default=str)
    data = record.get("data")
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- emtbench",
        f"- {method}",
        *(["base_model: " + str(base)] if base and "/" in str(base) and not Path(str(base)).exists() else []),
        "---",
        "",
        f"# {method} checkpoint of `{base}`",
        "",
        f"Produced by `emtbench` with method **{method}**. The full record, including package",
        f"versions and parameter counts, is in `{RUN_FILE}`.",
        "",
        "## Settings",
        "",
        "```json",
        settings,
        "```",
        "",
    ]
    if data:
        lines += ["## Data", "", f"`{json.dumps(data, default=str)}`", ""]
    if "parameters" in record:
        params = record["parameters"]
        lines += ["## Parameters", ""]
        lines += [f"- {key}: {value}" for key, value in sorted(params.items())]
        lines.append("")
    lines += [
        "## Forgetting results",
        "",
        FORGETTING_START,
        "Not evaluated yet. Run `emtbench eval` on this folder and build a leaderboard to fill this in.",
        FORGETTING_END,
        "",
    ]
    return "\n".join(lines)


def push_to_hub(output_dir: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Upload a finished model folder; the token comes from the usual HF environment or login."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(folder_path=str(output_dir), repo_id=repo_id, repo_type="model")
    return str(getattr(info, "commit_url", info))
