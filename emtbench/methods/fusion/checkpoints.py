"""Loading and checking the checkpoints and calibration data that every fusion method starts from.

Everything that can be wrong with the user's input (mismatched architectures or shapes, calibration
data without answer tokens) is found here, before any model weights are loaded or fused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from emtbench.core.errors import EmtbenchError

FROZEN_PARTS = ("embeddings", "lm_head", "vision_tower")
"""Parts left at pre-trained values unless ``--copy-finetuned`` names them."""


def _config(path: str, flag: str):
    from transformers import AutoConfig

    if not (Path(path).expanduser() / "config.json").is_file():
        raise EmtbenchError(
            f"{path} is not a model directory (no config.json)",
            where=flag,
            fix="pass a folder written by save_pretrained (e.g. an `emtbench finetune` output)",
        )
    return AutoConfig.from_pretrained(path)


def _is_vision_language(config) -> bool:
    return hasattr(config, "vision_config")


def auto_class(config):
    """The Auto class a checkpoint loads with: image-text-to-text for VLMs, causal LM otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if _is_vision_language(config) else AutoModelForCausalLM


def _parameter_shapes(config) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes without allocating weights (built on the meta device)."""
    with torch.device("meta"):
        model = auto_class(config).from_config(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_compatible(pretrained: str, finetuned: Sequence[str]) -> None:
    """Same architecture and the same parameter names and shapes, or a clear error naming the first difference."""
    base = _config(pretrained, "--pretrained")
    base_shapes = _parameter_shapes(base)
    for path in finetuned:
        other = _config(path, "--finetuned")
        if (base.architectures or [None])[0] != (other.architectures or [None])[0] or (
            base.model_type != other.model_type
        ):
            raise EmtbenchError(
                f"architecture {(other.architectures or [other.model_type])[0]} differs from the pre-trained "
                f"{(base.architectures or [base.model_type])[0]}",
                where=f"--finetuned {path}",
                fix="fuse a fine-tuned model with the exact pre-trained checkpoint it was fine-tuned from",
            )
        shapes = _parameter_shapes(other)
        for name in sorted(set(base_shapes) | set(shapes)):
            if base_shapes.get(name) != shapes.get(name):
                raise EmtbenchError(
                    f"parameter {name} has shape {shapes.get(name)} but {base_shapes.get(name)} in the "
                    "pre-trained model",
                    where=f"--finetuned {path}",
                    fix="fuse a fine-tuned model with the exact pre-trained checkpoint it was fine-tuned from",
                )


def load_model(path: str):
    """A checkpoint through its Auto class, in its stored dtype, in eval mode."""
    config = _config(path, "model")
    return auto_class(config).from_pretrained(path, dtype="auto").eval()


def load_processor(path: str):
    """The processor (VLM) or tokenizer (text-only LM) saved next to the pre-trained weights."""
    from transformers import AutoProcessor, AutoTokenizer

    if _is_vision_language(_config(path, "--pretrained")):
        return AutoProcessor.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def calibration_batches(
    spec: str,
    processor,
    *,
    samples: int,
    batch_size: int,
    seed: int = 0,
    split: str = "train",
    image_root: str | None = None,
) -> list[dict[str, Any]]:
    """Target-task batches (``labels`` = -100 except answer tokens); errors when no answer token is left."""
    from emtbench.methods.data import ConversationCollator, load_conversations

    rows = load_conversations(spec, image_root=image_root, split=split, limit=samples, seed=seed)
    collator = ConversationCollator(processor)
    batches = [
        collator([rows[index] for index in range(start, min(start + batch_size, len(rows)))])
        for start in tqdm(range(0, len(rows), batch_size), desc=f"calibration {spec}", unit="batch")
    ]
    check_target_tokens(batches, spec)
    return batches


def check_target_tokens(batches: Sequence[dict[str, Any]], spec: str) -> None:
    """Calibration must be *target-task* data: at least one answer token to fit."""
    from emtbench.methods.data import IGNORE_INDEX

    targets = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in batches)
    if targets == 0:
        raise EmtbenchError(
            "the calibration data has no target (answer) tokens",
            where=f"--calib-data {spec}",
            fix="use conversations with non-empty assistant answers (e.g. emt:digits or a LLaVA JSON)",
        )


def frozen_prefixes(model, copy_finetuned: Sequence[str]) -> dict[str, str]:
    """Module prefixes of the parts that stay pre-trained (all of :data:`FROZEN_PARTS` not copied)."""
    from emtbench.methods.fusion.driver import fusion_layout

    parts = fusion_layout(model).frozen_parts
    return {part: prefix for part, prefix in parts.items() if part not in copy_finetuned}


def copy_finetuned_parts(
    model, finetuned: Sequence[dict[str, torch.Tensor]], parts: Sequence[str]
) -> list[str]:
    """Set the named parts to the (mean) fine-tuned values; returns the parameter names changed."""
    from emtbench.methods.fusion.driver import fusion_layout

    layout = fusion_layout(model).frozen_parts
    changed = []
    with torch.no_grad():
        for part in parts:
            if part not in layout:
                raise EmtbenchError(
                    f"this model has no {part!r} part",
                    where="--copy-finetuned",
                    fix=f"use {', '.join(layout)}",
                )
            prefix = layout[part]
            for name, parameter in model.named_parameters():
                if name == prefix or name.startswith(prefix + "."):
                    mean = torch.stack([state[name].float() for state in finetuned]).mean(dim=0)
                    if not torch.equal(mean.to(parameter.dtype), parameter):
                        parameter.copy_(mean)
                        changed.append(name)
    return changed


def changed_fraction(model, pretrained_state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """How many parameters differ from pre-trained, overall and per parameter tensor that changed."""
    total = changed = 0
    per_tensor = {}
    for name, parameter in model.named_parameters():
        different = int((parameter.detach() != pretrained_state[name]).sum())
        total += parameter.numel()
        changed += different
        if different:
            per_tensor[name] = different / parameter.numel()
    return {"changed": changed, "total": total, "changed_fraction": changed / total, "per_tensor": per_tensor}
