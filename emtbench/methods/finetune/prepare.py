"""Loading a model for fine-tuning and choosing which of its parameters train."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emtbench.core.errors import EmtbenchError
from emtbench.models.parts import model_parts, part_paths

if TYPE_CHECKING:
    from emtbench.methods.finetune.options import TrainSettings


def check_architecture(model_path: str):
    """Fail on an unsupported architecture before any weights are loaded; return the config."""
    from transformers import AutoConfig

    from emtbench.models.checked import check_config_file

    check_config_file(model_path, where="--model", required=False)  # strict UTF-8 / JSON, named
    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise EmtbenchError(
            f"cannot read a model config from {model_path!r} ({error})",
            where="--model",
            fix="pass a Hugging Face model folder (with config.json) or a Hub id",
        ) from None
    architectures = getattr(config, "architectures", None) or [type(config).__name__]
    part_paths(architectures[0])
    return config


def load_model_and_processor(model_path: str):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    check_architecture(model_path)
    from emtbench.models.checked import from_pretrained_checked

    # missing, mis-shaped or NaN weights are a named error, never a random initialisation trained on
    model = from_pretrained_checked(
        AutoModelForImageTextToText, model_path, where="--model", dtype=torch.float32
    )
    part_paths(model)
    processor = AutoProcessor.from_pretrained(model_path)
    return model, processor


def language_linear_names(model) -> list[str]:
    """Full names of every ``nn.Linear`` in the language model (the output head lives outside it)."""
    from torch import nn

    paths = part_paths(model)
    prefix = paths.language_model + "."
    return [
        name
        for name, module in model.named_modules()
        if name.startswith(prefix) and isinstance(module, nn.Linear) and not name.endswith(paths.lm_head)
    ]


def prepare_model(model, settings: TrainSettings):
    """Freeze everything, let the projector train, then let the method choose the rest (or wrap the model)."""
    parts = model_parts(model)
    model.requires_grad_(False)
    for projector in parts.projectors:
        projector.requires_grad_(True)
    settings.options = settings.method_object.resolve(settings.options, model.config)
    return settings.method_object.prepare(model, parts, settings.options)


def trainable_count(model) -> int:
    return sum(parameter_count(p) for p in model.parameters() if p.requires_grad)


def parameter_count(parameter) -> int:
    """Values in a parameter; under DeepSpeed ZeRO-3 the local tensor is an empty shard, ``ds_numel`` is full."""
    return int(getattr(parameter, "ds_numel", parameter.numel()))


def changed_counts(model, reference) -> tuple[int, int]:
    """(values that differ from ``reference``, all parameter values) of a merged model.

    Both models are plain, unsharded (CPU) models, so this works whatever sharding training used.
    """
    before = dict(reference.named_parameters())
    changed = 0
    total = 0
    for name, param in model.named_parameters():
        total += param.numel()
        base = before.get(name)
        if base is not None and base.shape == param.shape:
            changed += int((param.detach() != base.detach().to(param.device, param.dtype)).sum())
    return changed, total
