"""``linear``: the projector alone trains (EMT paper §5's "linear" fine-tuning)."""

from __future__ import annotations

from emtbench.methods.finetune.base import FinetuneMethod, register_method


@register_method
class LinearFinetuning(FinetuneMethod):
    name = "linear"
    summary = "projector only"
    default_learning_rate = 2e-5
    learning_rate_source = (
        "CL-LLaVA App. A, fine-tuning stage; its 1e-3 is the alignment stage's rate at batch 256"
    )
