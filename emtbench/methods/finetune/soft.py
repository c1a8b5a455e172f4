"""``soft``: full fine-tuning with soft targets (the continual-learning paper, App. A.5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emtbench.core.options import option
from emtbench.methods.finetune.base import check_fraction, register_method
from emtbench.methods.finetune.full import FullFinetuning
from emtbench.methods.finetune.loss import make_compute_loss_func


@dataclass(frozen=True)
class SoftTargetOptions:
    alpha: float = option(
        0.01,
        help="soft-target α: (1−α) on the target token, α/(V−1) on every other one "
        "(default 0.01, the continual-learning paper's best, App. A.5)",
    )


class SoftTargets:
    """Mixin for a method: the soft-target loss with the options' ``alpha`` (checked to be in [0, 1))."""

    def check(self, options: Any) -> None:
        super().check(options)
        check_fraction(options.alpha, "alpha", where="--alpha")

    def compute_loss_func(self, options: Any) -> Callable | None:
        return make_compute_loss_func(options.alpha)


@register_method
class SoftTargetFinetuning(SoftTargets, FullFinetuning):
    name = "soft"
    summary = "full + soft-target loss (--alpha, default 0.01)"
    options_class = SoftTargetOptions
