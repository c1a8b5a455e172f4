"""Which Trainer checkpoint a ``--resume`` can trust, after a run was killed in the middle of a save.

transformers writes ``checkpoint-N/`` file by file (weights, config, optimizer, scheduler, RNG state)
and ``trainer_state.json`` last, then deletes the older checkpoints. A process killed during a save
(``kill -9``, the OOM killer, a preempted node) leaves ``checkpoint-N/`` half written -- a 0-byte
``config.json``, half a ``model.safetensors`` -- next to the complete ``checkpoint-M`` before it, and
``get_last_checkpoint`` picks the newest folder whatever it holds. Here a checkpoint counts only when
its ``trainer_state.json`` is complete and says step N and its weight and config files can be read;
newer folders that are not are removed (they are the dead run's leftovers, never results), so the run
continues from the last complete checkpoint and the Trainer can write ``checkpoint-N`` afresh.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import read_json

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _step(folder: Path) -> int | None:
    match = CHECKPOINT.match(folder.name)
    return int(match.group(1)) if match else None


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` (a ``checkpoint-N``) is not a complete checkpoint, or None when it is."""
    step = _step(folder)
    state_file = folder / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json (the Trainer writes it last: the save was cut short)"
    try:
        state = read_json(state_file, what="trainer state")
    except EmtbenchError as error:
        return f"trainer_state.json: {error.problem}"
    if not isinstance(state, dict) or state.get("global_step") != step:
        found = state.get("global_step") if isinstance(state, dict) else None
        return f"trainer_state.json says global_step {found!r}, not {step}"
    for name in ("config.json", "adapter_config.json"):
        if (folder / name).exists():
            try:
                read_json(folder / name, what=name)
            except EmtbenchError as error:
                return f"{name}: {error.problem}"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not any(folder.glob("*.bin")) and not any(p.is_dir() for p in folder.iterdir()):
        return "no weights"
    for path in weights:
        problem = _safetensors_problem(path)
        if problem:
            return problem
    return None


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file's header must parse and its tensors must fit in the file (cheap: no data read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            list(handle.keys())
    except (SafetensorError, OSError, ValueError) as error:
        return f"{path.name} is unreadable ({str(error).splitlines()[0]})"
    return None


def last_complete_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint-N`` under ``checkpoint_dir``; newer incomplete ones are removed."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return None
    folders = sorted(
        (p for p in checkpoint_dir.iterdir() if p.is_dir() and _step(p) is not None),
        key=lambda p: _step(p) or 0,
        reverse=True,
    )
    for folder in folders:
        problem = checkpoint_problem(folder)
        if problem is None:
            logger.info("resuming from %s", folder)
            return folder
        logger.warning("%s is incomplete (%s): removed; resuming from an earlier checkpoint", folder, problem)
        shutil.rmtree(folder, ignore_errors=True)
    return None
