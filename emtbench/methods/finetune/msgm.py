"""``msgm``: LoRA with soft targets (the continual-learning paper's mSGM, App. A.5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emtbench.methods.finetune.base import check_fraction, register_method
from emtbench.methods.finetune.lora import LoraFinetuning, LoraOptions
from emtbench.methods.finetune.loss import make_compute_loss_func
from emtbench.methods.finetune.soft import SoftTargetOptions


@dataclass(frozen=True)
class MsgmOptions(LoraOptions, SoftTargetOptions):
    """LoRA's options and the soft-target α."""


@register_method
class MsgmFinetuning(LoraFinetuning):
    name = "msgm"
    summary = "lora + soft-target loss (--alpha, default 0.01)"
    options_class = MsgmOptions

    def check(self, options: Any) -> None:
        super().check(options)
        check_fraction(options.alpha, "alpha", where="--alpha")

    def compute_loss_func(self, options: Any) -> Callable | None:
        return make_compute_loss_func(options.alpha)
