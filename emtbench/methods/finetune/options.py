"""What a fine-tuning run is given: shared training settings, the method and its options, the data.

:class:`TrainingOptions` holds what every method shares; each method module declares its own options
dataclass (``LoraOptions``, ``SoftTargetOptions``); :class:`TrainSettings` is one method with both;
:class:`FinetuneOptions` adds the model, data and output that :func:`emtbench.finetune` needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.options import option, to_argv
from emtbench.core.records import WrittenModel
from emtbench.methods.finetune.base import FINETUNE_METHODS, FinetuneMethod, get_method

LEGACY_RECORD_DEFAULTS: dict[str, Any] = {
    "alpha": 0.0,
    "lora_rank": None,
    "lora_alpha": 8.0,
    "lora_dropout": 0.05,
    "use_rslora": True,
    "keep_adapter": False,
}
"""Method options every ``emtbench_run.json`` lists, with the value recorded for methods without them.

Run records (``emtbench_run_version`` 1) keep one flat ``settings`` object whatever the method, so
records of earlier runs stay comparable (and ``--output`` recognises an identical earlier run)."""


TRAIN_PROMPTS = ("short", "eval")
"""``--train-prompt`` values: the fine-tuning question of EMT App. D.1, or the evaluation prompt of App. C.1."""


@dataclass(frozen=True)
class TrainingOptions:
    """Settings every fine-tuning method shares (the Trainer's)."""

    epochs: float = option(1.0, help="training epochs")
    max_steps: int = option(-1, help="optimizer steps; overrides --epochs when > 0")
    learning_rate: float | None = option(
        None, flag="--lr", help="learning rate (default: the method's own, listed with each method)"
    )
    batch_size: int = option(8, help="examples per device per step")
    grad_accum: int = option(1, help="gradient accumulation steps")
    warmup_ratio: float = option(
        0.03, help="linear warm-up share of the steps (default 0.03); the first step already learns"
    )
    weight_decay: float = option(0.0, help="weight decay")
    lr_scheduler: str = option("cosine", help="transformers scheduler name")
    bf16: bool = option(False, help="bf16 mixed precision")
    gradient_checkpointing: bool = option(False, help="trade compute for activation memory")
    seed: int = option(0, help="seed for data order, sampling and init")
    save_steps: int = option(500, help="Trainer checkpoint interval")
    logging_steps: int = option(10, help="loss logging interval")
    report_to: str = option(
        "none",
        help="where the Trainer also reports its logs: tensorboard, wandb (comma-separate both) or none "
        "(default); the log history is always kept in OUTPUT/trainer_state.json, TensorBoard's in OUTPUT/runs",
    )
    trainer_args: dict[str, Any] = field(default_factory=dict)
    """Further transformers ``TrainingArguments`` fields, e.g. ``{"max_grad_norm": 0.5}``; on the command
    line any ``--FIELD VALUE`` emtbench has no flag for (:mod:`emtbench.methods.finetune.trainer_args`)."""

    def __post_init__(self) -> None:
        from emtbench.methods.finetune.trainer_args import check_trainer_args, report_to_list

        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise EmtbenchError(f"{name} must be at least 1", where=f"--{name.replace('_', '-')}")
        report_to_list(self.report_to)  # a typo or a missing package fails before anything loads
        if self.trainer_args:
            check_trainer_args(self.trainer_args)
        if self.max_steps <= 0 and self.epochs <= 0:
            raise EmtbenchError("train for some epochs or steps", where="--epochs/--max-steps")


def methods_accepting(name: str) -> list[str]:
    """The methods whose options have a field ``name``."""
    return [m.name for m in FINETUNE_METHODS.values() if name in _field_names(m.options_class)]


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@dataclass
class TrainSettings:
    """A method and everything that determines its training run; recorded in ``emtbench_run.json``."""

    method: str = "lora"
    training: TrainingOptions = field(default_factory=TrainingOptions)
    options: Any = None
    """The method's options dataclass (``LoraOptions`` ...); ``None`` means its defaults."""

    def __post_init__(self) -> None:
        method = get_method(self.method)
        if self.options is None:
            self.options = method.options_class()
        elif not isinstance(self.options, method.options_class):
            raise EmtbenchError(
                f"method {self.method!r} takes {method.options_class.__name__}, "
                f"not {type(self.options).__name__}",
                where="--method",
            )
        method.check(self.options)
        if self.training.learning_rate is None:
            self.training = dataclasses.replace(self.training, learning_rate=method.default_learning_rate)
        from emtbench.methods.settings_checks import check_training_settings

        check_training_settings(self.training)  # values no run can use: refused before anything loads

    @classmethod
    def of(cls, method: str = "lora", **values: Any) -> TrainSettings:
        """Settings from flat keyword arguments (``of("lora", max_steps=10, lora_rank=4)``).

        A method option the method does not have is refused, naming the methods that have it, unless it
        holds the value such methods record (``alpha=0.0`` for ``lora``).
        """
        strategy = get_method(method)
        training_names = _field_names(TrainingOptions)
        own_names = _field_names(strategy.options_class)
        training = {k: v for k, v in values.items() if k in training_names}
        own = {k: v for k, v in values.items() if k in own_names}
        for key in sorted(set(values) - training_names - own_names):
            users = methods_accepting(key)
            if not users:
                raise EmtbenchError(
                    f"unknown fine-tuning setting {key!r}", fix="see `emtbench finetune --help`"
                )
            if key in LEGACY_RECORD_DEFAULTS and values[key] == LEGACY_RECORD_DEFAULTS[key]:
                continue
            raise EmtbenchError(
                f"--{key.replace('_', '-')} only applies to {' / '.join(users)}, not {method!r}",
                where=f"--{key.replace('_', '-')}",
                fix=f"use --method {' or '.join(users)}, or drop the flag",
            )
        return cls(method, TrainingOptions(**training), strategy.options_class(**own))

    @property
    def method_object(self) -> FinetuneMethod:
        return get_method(self.method)

    @property
    def keep_adapter(self) -> bool:
        return bool(getattr(self.options, "keep_adapter", False))

    def resolve(self, config: Any) -> None:
        """Fill defaults that depend on the model (LoRA rank = hidden size / 2)."""
        self.options = self.method_object.resolve(self.options, config)

    def to_argv(self) -> list[str]:
        """The training and method flags of these settings (not ``--method``); the method's own rate is implied."""
        training = self.training
        if training.learning_rate == self.method_object.default_learning_rate:
            training = dataclasses.replace(training, learning_rate=None)
        from emtbench.methods.finetune.trainer_args import trainer_args_argv

        return [*to_argv(training), *to_argv(self.options), *trainer_args_argv(training.trainer_args)]

    def record(self) -> dict[str, Any]:
        """The flat ``settings`` object of ``emtbench_run.json``.

        ``report_to`` and ``trainer_args`` appear only when set, so a default run's record is what it
        was before they existed (and ``--output`` still recognises an identical earlier run)."""
        training = dataclasses.asdict(self.training)
        for name, unset in (("report_to", "none"), ("trainer_args", {})):
            if training.get(name) == unset:
                training.pop(name)
        return {
            "method": self.method,
            **training,
            **LEGACY_RECORD_DEFAULTS,
            **dataclasses.asdict(self.options),
        }


@dataclass
class FinetuneOptions:
    """Everything :func:`emtbench.finetune` needs: the settings, the model, the data and where to write."""

    model: str = option(help="base model: a Hugging Face folder or Hub id")
    data: str = option(help="emt:NAME or a LLaVA-format JSON file")
    output: Path = option(help="folder to write (refused if it holds a different run)")
    settings: TrainSettings = field(default_factory=TrainSettings)
    rehearsal_data: list[str] = option(
        default_factory=list,
        comma_list=True,
        help="earlier task(s) to rehearse (emt:NAME or JSON; repeat or comma-separate)",
    )
    rehearsal_fraction: float = option(0.01, help="share of each rehearsal task mixed in")
    image_root: str | None = option(None, help="folder that a LLaVA JSON's image paths are relative to")
    limit: int | None = option(None, help="use a seeded random subset of N training examples per task")
    train_prompt: str = option(
        "short",
        choices=TRAIN_PROMPTS,
        help="question of emt: training data: 'short' = the EMT paper's fine-tuning question (App. D.1, "
        "'What is the object in the image?'); 'eval' = the evaluation question with its label list "
        "(App. C.1), so the image tokens see the same text in training and evaluation",
    )
    snapshot_steps: list[int] = option(
        default_factory=list,
        comma_list=True,
        metavar="STEP",
        help="also write the model as it was after these optimizer steps, each a full model folder "
        "OUTPUT-stepN next to OUTPUT (for a forgetting curve from one run; repeat or comma-separate)",
    )
    overwrite: bool = option(False, help="replace an existing output folder")
    resume: bool = option(False, help="continue from the last Trainer checkpoint")
    keep_checkpoints: bool = option(False, help="keep Trainer checkpoints after success")
    checkpoint_dir: Path | None = None
    """Where Trainer checkpoints go (default: ``.OUTPUT.checkpoints`` next to the output)."""
    push_to_hub: str | None = option(
        None, metavar="REPO_ID", help="upload the finished folder to this Hub repo"
    )
    private: bool = option(False, help="create the Hub repo as private")

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.limit is not None and self.limit < 1:
            raise EmtbenchError("--limit must be at least 1", where="--limit")
        if self.train_prompt not in TRAIN_PROMPTS:
            raise EmtbenchError(
                f"unknown training prompt {self.train_prompt!r}",
                where="--train-prompt",
                fix=f"use one of {', '.join(TRAIN_PROMPTS)}",
            )
        self.snapshot_steps = _snapshot_steps(self.snapshot_steps, self.settings.training.max_steps)

    def snapshot_output(self, step: int) -> Path:
        """Where the model after ``step`` optimizer steps is written (``--snapshot-steps``)."""
        return snapshot_output(self.output, step)

    def to_argv(self) -> list[str]:
        """``emtbench finetune`` arguments that describe the same run."""
        return [
            "--model", self.model, "--method", self.settings.method, "--data", self.data,
            *self.settings.to_argv(),
            *to_argv(self, exclude=("model", "data", "output")),
            "--output", str(self.output),
        ]  # fmt: skip


def snapshot_output(output: Path, step: int) -> Path:
    """``OUTPUT-stepN``: the sibling folder holding the model after ``step`` optimizer steps."""
    output = Path(output)
    return output.parent / f"{output.name}-step{step}"


def _snapshot_steps(values: list[Any], max_steps: int) -> list[int]:
    steps = []
    for value in values:
        try:
            step = int(value)
        except (TypeError, ValueError):
            raise EmtbenchError(
                f"{value!r} is not a step number", where="--snapshot-steps", fix="e.g. --snapshot-steps 8,16"
            ) from None
        if step < 1 or (max_steps > 0 and step >= max_steps):
            limit = f"1 to {max_steps - 1}" if max_steps > 1 else "at least 1 (below --max-steps)"
            raise EmtbenchError(
                f"snapshot step {step} is outside the run",
                where="--snapshot-steps",
                fix=f"pass steps {limit}; the model after the last step is OUTPUT itself",
            )
        steps.append(step)
    if len(set(steps)) != len(steps):
        raise EmtbenchError(f"snapshot steps repeat: {values}", where="--snapshot-steps")
    return sorted(steps)


class FinetuneResult(WrittenModel):
    """What :func:`emtbench.finetune` wrote: the model folder, its run record and the Hub URL if pushed."""

    @property
    def parameters(self) -> dict[str, Any]:
        """``trained`` (parameters that trained), ``changed`` / ``total`` values and ``changed_fraction``."""
        return self.record.get("parameters", {})


__all__ = [
    "LEGACY_RECORD_DEFAULTS",
    "TRAIN_PROMPTS",
    "FinetuneOptions",
    "FinetuneResult",
    "TrainSettings",
    "TrainingOptions",
    "snapshot_output",
]
