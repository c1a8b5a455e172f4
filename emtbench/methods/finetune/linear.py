"""``linear``: the projector alone trains (EMT paper §5's "linear" fine-tuning)."""

from __future__ import annotations

from emtbench.methods.finetune.base import FinetuneMethod, register_method


@register_method
class LinearFinetuning(FinetuneMethod):
    name = "linear"
    summary = "projector only"
    default_learning_rate = 1e-3
    learning_rate_source = "CL-LLaVA App. A, alignment stage (projector-only training)"
