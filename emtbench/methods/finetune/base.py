"""The fine-tuning method interface (peft's shape: one options dataclass and one module per method).

A method decides which parameters train beyond the projector (always trained; the vision tower is
always frozen), which loss the Trainer uses, and whether the result is saved as a peft adapter that is
merged afterwards. Adding one is a module in this package with a :class:`FinetuneMethod` subclass
under ``@register_method``; ``emtbench finetune`` then lists it and grows its flags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from emtbench.core.errors import EmtbenchError
from emtbench.core.registry import Registry


@dataclass(frozen=True)
class NoOptions:
    """A method without options of its own."""


class FinetuneMethod:
    """One fine-tuning strategy. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    summary: ClassVar[str]
    """One line for ``emtbench finetune --help``."""
    options_class: ClassVar[type] = NoOptions
    default_learning_rate: ClassVar[float]
    learning_rate_source: ClassVar[str]
    """Where :attr:`default_learning_rate` comes from (shown in the help)."""
    saves_adapter: ClassVar[bool] = False
    """The Trainer saves a peft adapter; the result is the base model with it merged (or kept)."""

    def check(self, options: Any) -> None:
        """Refuse bad option values before any model is loaded."""

    def resolve(self, options: Any, config: Any) -> Any:
        """Fill defaults that depend on the model's config (LoRA's rank); return the options."""
        return options

    def prepare(self, model: Any, parts: Any, options: Any) -> Any:
        """Make the method's parameters trainable (the projector already is); return the model to train."""
        return model

    def compute_loss_func(self, options: Any) -> Callable | None:
        """The ``Trainer(compute_loss_func=...)`` hook, or ``None`` for the model's own cross-entropy."""
        return None


FINETUNE_METHODS: Registry[FinetuneMethod] = Registry(
    "method", builtins="emtbench.methods.finetune", where="--method"
)
"""Every fine-tuning method by name; the modules of this package register themselves on the first lookup."""


def register_method(cls: type[FinetuneMethod]) -> type[FinetuneMethod]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    FINETUNE_METHODS.add(cls.name, cls(), summary=cls.summary)
    return cls


def get_method(name: str) -> FinetuneMethod:
    return FINETUNE_METHODS.get(name)


def check_fraction(value: float, name: str, *, where: str) -> None:
    if not 0.0 <= value < 1.0:
        raise EmtbenchError(f"{name} must be in [0, 1), got {value}", where=where)
