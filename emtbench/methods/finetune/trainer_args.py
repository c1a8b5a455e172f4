"""transformers' own training habits on ``emtbench finetune`` / ``continual``: ``--report-to`` and any
further ``TrainingArguments`` field passed through.

emtbench names the Trainer settings it needs as its own flags (``--lr``, ``--batch-size``, ...; see
:class:`~emtbench.methods.finetune.options.TrainingOptions`). Any other ``TrainingArguments`` field
typed on the command line (``--max_grad_norm 0.5``, ``--optim adafactor``, ``--save-strategy epoch``)
is read by transformers' ``HfArgumentParser`` -- the parser transformers' own example scripts use, so
types, choices and ``--no-x`` switches are transformers' -- and handed to ``TrainingArguments``
unchanged. A field emtbench already has a flag for is refused with that flag's name (two names for one
setting would disagree), and a flag that is neither is refused with the closest names.
"""

from __future__ import annotations

import importlib.util
from enum import Enum
from typing import Any

from emtbench.core.errors import EmtbenchError

REPORT_TO = ("none", "tensorboard", "wandb")
"""``--report-to`` values: transformers' integrations emtbench documents (comma-separate several)."""
REPORT_TO_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
"""The package each integration needs (any one of them), checked before anything loads."""

OWNED: dict[str, str] = {
    "output_dir": "--output",
    "per_device_train_batch_size": "--batch-size",
    "gradient_accumulation_steps": "--grad-accum",
    "num_train_epochs": "--epochs",
    "max_steps": "--max-steps",
    "learning_rate": "--lr",
    "warmup_steps": "--warmup-ratio",
    "warmup_ratio": "--warmup-ratio",
    "weight_decay": "--weight-decay",
    "lr_scheduler_type": "--lr-scheduler",
    "bf16": "--bf16",
    "gradient_checkpointing": "--gradient-checkpointing",
    "activation_checkpointing": "--gradient-checkpointing",
    "logging_steps": "--logging-steps",
    "save_steps": "--save-steps",
    "seed": "--seed",
    "data_seed": "--seed",
    "report_to": "--report-to",
    "disable_tqdm": "--no-progress",
    "resume_from_checkpoint": "--resume",
    "push_to_hub": "--push-to-hub",
    "hub_model_id": "--push-to-hub",
    "remove_unused_columns": "",
}
"""``TrainingArguments`` fields emtbench sets itself, with the emtbench flag for each ("" = fixed)."""


def report_to_list(value: str | list[str] | None) -> list[str]:
    """``--report-to`` as transformers' ``report_to`` list, checked (names and installed packages)."""
    names = value if isinstance(value, list) else str(value or "none").split(",")
    names = [name.strip() for name in names if name.strip()] or ["none"]
    unknown = [name for name in names if name not in REPORT_TO]
    if unknown:
        raise EmtbenchError(
            f"--report-to {', '.join(unknown)} is not one of {', '.join(REPORT_TO)}",
            where="--report-to",
            fix="e.g. --report-to tensorboard, or --report-to tensorboard,wandb",
        )
    if "none" in names:
        if len(names) > 1:
            raise EmtbenchError("--report-to none cannot be combined", where="--report-to")
        return ["none"]
    for name in names:
        if not any(importlib.util.find_spec(package) for package in REPORT_TO_PACKAGES[name]):
            raise EmtbenchError(
                f"--report-to {name} needs the {REPORT_TO_PACKAGES[name][0]} package",
                where="--report-to",
                fix=f"pip install {REPORT_TO_PACKAGES[name][0]}",
            )
    return names


def training_argument_fields() -> dict[str, Any]:
    from transformers import TrainingArguments

    return {name: f for name, f in TrainingArguments.__dataclass_fields__.items() if f.init}


def check_trainer_args(values: dict[str, Any]) -> dict[str, Any]:
    """``trainer_args`` of the Python API: ``TrainingArguments`` fields emtbench does not set itself."""
    fields = training_argument_fields()
    for name in values:
        if name in OWNED:
            raise _owned_error(name)
        if name not in fields:
            raise _unknown_error(f"--{name}", list(fields))
    return dict(values)


def _owned_error(name: str) -> EmtbenchError:
    flag = OWNED[name]
    if not flag:
        return EmtbenchError(f"{name} is fixed by emtbench", where=f"--{name}", fix="drop the flag")
    return EmtbenchError(
        f"TrainingArguments' {name} is emtbench's {flag}", where=f"--{name}", fix=f"use {flag} instead"
    )


def _unknown_error(flag: str, candidates: list[str]) -> EmtbenchError:
    """``candidates``: flag names (``--max-steps``) or TrainingArguments fields (``max_grad_norm``)."""
    import difflib

    def key(name: str) -> str:
        return name.lstrip("-").replace("-", "_")

    shown = {}
    for name in candidates:
        if key(name) not in OWNED or name.startswith("--"):  # an owned field is suggested by its flag
            shown.setdefault(key(name), name if name.startswith("--") else f"--{name}")
    close = difflib.get_close_matches(key(flag), list(shown), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(shown[name] for name in close)}? " if close else ""
    return EmtbenchError(
        f"unrecognized argument {flag}: neither an emtbench flag nor a TrainingArguments field",
        where=flag,
        fix=f"{hint}see `emtbench finetune --help`; any transformers TrainingArguments field "
        "passes through as --FIELD VALUE",
    )


def trainer_args_from_argv(argv: list[str], *, own_flags: list[str] = ()) -> dict[str, Any]:
    """The ``TrainingArguments`` fields typed in ``argv`` (what emtbench's parser left), typed by
    transformers' ``HfArgumentParser``; anything else is a named error."""
    from transformers import HfArgumentParser, TrainingArguments

    if not argv:
        return {}
    fields = training_argument_fields()
    given: list[str] = []
    for token in argv:
        if not token.startswith("--"):
            continue
        name = token[2:].split("=", 1)[0]
        dest = name.replace("-", "_")
        if dest.startswith("no_") and dest[3:] in fields and dest not in fields:
            dest = dest[3:]  # HfArgumentParser's --no-x switch of a True-by-default bool
        if dest in OWNED:
            raise _owned_error(dest)
        if dest not in fields:
            raise _unknown_error(token.split("=", 1)[0], [*own_flags, *fields])
        given.append(dest)
    parser = HfArgumentParser(TrainingArguments, exit_on_error=False)
    try:
        namespace, rest = parser.parse_known_args(argv)
    except (Exception, SystemExit) as error:  # argparse's own message names the flag and the value
        raise EmtbenchError(
            f"bad TrainingArguments value: {error}",
            where=" ".join(argv),
            fix="see transformers' TrainingArguments for the field's type",
        ) from None
    if rest:
        raise EmtbenchError(
            f"unrecognized argument(s) {' '.join(rest)}",
            where=" ".join(rest),
            fix="each TrainingArguments field takes --FIELD VALUE (or --FIELD for a switch)",
        )
    values = {name: getattr(namespace, name) for name in dict.fromkeys(given)}
    # transformers' str enums (OptimizerNames.ADAFACTOR) as their plain values, for the run record
    return {name: value.value if isinstance(value, Enum) else value for name, value in values.items()}


def trainer_args_argv(values: dict[str, Any]) -> list[str]:
    """Command-line flags that give ``values`` again (for a printed, re-runnable command)."""
    argv: list[str] = []
    for name, value in values.items():
        if isinstance(value, bool):
            field = training_argument_fields().get(name)
            default = getattr(field, "default", False)
            argv.append(f"--{name}" if value else f"--no_{name}" if default is True else f"--{name}=false")
        elif isinstance(value, list | tuple):
            argv += [f"--{name}", *map(str, value)]
        else:
            argv += [f"--{name}", str(getattr(value, "value", value))]
    return argv
