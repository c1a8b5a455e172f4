"""``msgm``: LoRA with soft targets (the continual-learning paper's mSGM, App. A.5)."""

from __future__ import annotations

from dataclasses import dataclass

from emtbench.methods.finetune.base import register_method
from emtbench.methods.finetune.lora import LoraFinetuning, LoraOptions
from emtbench.methods.finetune.soft import SoftTargetOptions, SoftTargets


@dataclass(frozen=True)
class MsgmOptions(LoraOptions, SoftTargetOptions):
    """LoRA's options and the soft-target α."""


@register_method
class MsgmFinetuning(SoftTargets, LoraFinetuning):
    name = "msgm"
    summary = "lora + soft-target loss (--alpha, default 0.01)"
    options_class = MsgmOptions
