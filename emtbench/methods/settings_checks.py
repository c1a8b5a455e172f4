"""Check fine-tuning settings before anything loads: a value the Trainer would only reject (or worse,
accept) after the model and data are loaded is a named error naming its flag.

transformers' ``TrainingArguments`` refuses some values late (``save_steps=0``, an unknown scheduler:
a ValueError after loading) and accepts others silently (a negative or NaN learning rate, a warm-up
ratio over 1, a NaN LoRA alpha), so a run either stops after the expensive part or trains to nonsense.
"""

from __future__ import annotations

import math
from typing import Any

from emtbench.core.errors import EmtbenchError


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_training_settings(settings: Any) -> None:
    """Raise an EmtbenchError for the first field of a ``TrainingOptions`` that no run can use."""
    checks = [
        ("learning_rate", "--lr", lambda v: _finite(v) and v > 0, "a positive number, e.g. 2e-5"),
        (
            "warmup_ratio",
            "--warmup-ratio",
            lambda v: _finite(v) and 0 <= v < 1,
            "a share in [0, 1), e.g. 0.03",
        ),
        ("weight_decay", "--weight-decay", lambda v: _finite(v) and v >= 0, "a number ≥ 0, e.g. 0.0"),
        ("save_steps", "--save-steps", lambda v: isinstance(v, int) and v >= 1, "a number of steps ≥ 1"),
        (
            "logging_steps",
            "--logging-steps",
            lambda v: isinstance(v, int) and v >= 1,
            "a number of steps ≥ 1",
        ),
    ]
    for name, flag, valid, wanted in checks:
        value = getattr(settings, name)
        if not valid(value):
            raise EmtbenchError(f"{flag} must be {wanted}, got {value!r}", where=flag)
    if settings.max_steps <= 0 and not (_finite(settings.epochs) and settings.epochs > 0):
        raise EmtbenchError(
            f"--epochs must be a positive number when --max-steps is not set, got {settings.epochs!r}",
            where="--epochs",
        )
    from transformers.trainer_utils import SchedulerType

    names = [kind.value for kind in SchedulerType]
    if settings.lr_scheduler not in names:
        raise EmtbenchError(
            f"unknown learning-rate scheduler {settings.lr_scheduler!r}",
            where="--lr-scheduler",
            fix=f"use one of: {', '.join(names)}",
        )
