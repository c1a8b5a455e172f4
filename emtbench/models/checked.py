"""Load a checkpoint with transformers and refuse one whose weights do not fit its own config.

``from_pretrained`` initialises a tensor the files lack at random (with a log line) and loads NaN
weights as they are; a merge or a fine-tune started from such a checkpoint produces a plausible-looking
model that is wrong. A config can match while the weights do not (a truncated shard, a hand-edited
file, a checkpoint saved from another architecture), so the check is made on what was loaded, using
transformers' own loading report (its key renames of older checkpoints included).
"""

from __future__ import annotations

from typing import Any

from emtbench.core.errors import EmtbenchError


def from_pretrained_checked(model_class: Any, path: str, *, where: str, **kwargs: Any):
    """``model_class.from_pretrained(path, **kwargs)``; missing, mis-shaped or non-finite weights are named errors."""
    import torch
    from safetensors import SafetensorError

    try:
        model, info = model_class.from_pretrained(
            path, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    except (OSError, ValueError, SafetensorError) as error:  # unreadable or truncated weight files
        raise EmtbenchError(
            f"cannot load the checkpoint: {str(error).splitlines()[0]}",
            where=f"{where} {path}",
            fix="pass a complete folder written by save_pretrained",
        ) from None
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda item: item[0])
    if missing or mismatched:
        shown = [f"{name} is missing" for name in missing[:3]] + [
            f"{name} has shape {tuple(found)} where the config needs {tuple(wanted)}"
            for name, found, wanted in mismatched[:3]
        ]
        raise EmtbenchError(
            f"the weights do not fit the config ({len(missing)} missing, {len(mismatched)} of the wrong "
            f"shape): {'; '.join(shown)}",
            where=f"{where} {path}",
            fix="re-save the checkpoint with save_pretrained, or pass the checkpoint its config.json belongs to",
        )
    broken = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if broken:
        raise EmtbenchError(
            f"{len(broken)} weight tensor(s) hold NaN or infinity, e.g. {broken[0]}",
            where=f"{where} {path}",
            fix="use a checkpoint saved before training diverged",
        )
    return model


def check_config_file(folder: str, *, where: str, required: bool = True) -> dict[str, Any] | None:
    """A local model folder's ``config.json``, read strictly (None when ``folder`` is not local, or
    has none and ``required`` is False: some lm-eval models read other folders).

    transformers reads it with ``json.load``: a non-UTF-8 byte, a truncated file or a duplicate key
    becomes a traceback (or a silently kept last value) deep inside a load; here it is a named error
    before any weights are touched.
    """
    from pathlib import Path

    from emtbench.core.readers import read_json

    path = Path(folder).expanduser()
    if not path.is_dir():
        return None
    config_file = path / "config.json"
    if not config_file.is_file() and not required:
        return None
    if not config_file.is_file():
        raise EmtbenchError(
            f"{path} is not a model folder (no config.json)",
            where=where,
            fix="pass a folder written by save_pretrained, or a Hub id",
        )
    config = read_json(config_file, what="model config", fix="re-save the model with save_pretrained")
    if not isinstance(config, dict):
        raise EmtbenchError("not a model config (a JSON object)", where=str(config_file))
    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise EmtbenchError(f"model_type {model_type!r} is not a name", where=str(config_file))
    architectures = config.get("architectures")
    if architectures is not None and (
        not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures)
    ):
        raise EmtbenchError(
            f"architectures {architectures!r} is not a list of class names", where=str(config_file)
        )
    return config
