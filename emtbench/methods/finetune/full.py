"""``full``: projector and language model train (the continual-learning paper's naive fine-tuning, App. A.5)."""

from __future__ import annotations

from typing import Any

from emtbench.methods.finetune.base import FinetuneMethod, register_method


@register_method
class FullFinetuning(FinetuneMethod):
    name = "full"
    summary = "projector + language model"
    default_learning_rate = 2e-5
    learning_rate_source = "CL-LLaVA App. A, fine-tuning stage"

    def prepare(self, model: Any, parts: Any, options: Any) -> Any:
        parts.language_model.requires_grad_(True)
        parts.lm_head.requires_grad_(True)
        return model
