"""What decides a demo run: :class:`DemoOptions` and the recipe's fixed choices (tasks, methods, files).

The recipe is the EMT experiment in miniature, fixed before any result was looked at (issue 14 §3):

* base: the default flagship, aligned on scikit-learn digits and Fashion-MNIST (``build-base``);
* target: Animal-MNIST's training split, a set the base was not aligned on (it scores near 0 there), so
  fine-tuning has headroom; evaluated on held-out Animal-MNIST (target), digits and Fashion-MNIST (the
  others) and the language probe ``emt_stdlib_ppl``;
* budget: 32 optimizer steps × batch 8 over 256 training examples (one epoch), per-method learning rates
  a user fine-tuning LLaVA would use (see :data:`METHODS`);
* a forgetting curve from the snapshots of each run (½ and the end with ``--quick``; ¼, ½, end in full);
* Model Tailor and DARE on the fine-tune that forgets most (:func:`emtbench.demo.plan.most_forgetting`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError

RECIPE_VERSION = 3
"""Part of every stage key: bump it when the recipe's commands change meaning (3: Animal-MNIST target, curve)."""
MARKER = "stage.json"
REPORT_FILE = "demo_report.json"
TABLE_FILE = "demo_table.txt"
TARGET_DATASET = "animal_mnist"
"""Fine-tuning data: Animal-MNIST's training split, disjoint from the test split evaluated."""
TARGET_TASK = f"emt_{TARGET_DATASET}"
OTHER_TASKS = ("emt_digits", "emt_fashion_mnist")
"""The base's alignment sets: what fine-tuning on the target may make it forget."""
EMT_TASKS = (TARGET_TASK, *OTHER_TASKS)
LANGUAGE_TASK = "emt_stdlib_ppl"
ALIGNMENT_DATA = tuple(f"emt:{task.removeprefix('emt_')}" for task in OTHER_TASKS)
"""The data ``build-base`` aligned the projector on; the ``rehearsal`` run mixes a share of it back in."""


@dataclass(frozen=True)
class MethodRecipe:
    """One fine-tuned run of the demo: the ``finetune`` method, its learning rate, rehearsal or not."""

    method: str
    learning_rate: float | None = None
    """``None``: the method's own default (``emtbench finetune --help`` gives its source)."""
    rehearsal: bool = False
    why: str = ""


METHODS: dict[str, MethodRecipe] = {
    "linear": MethodRecipe(
        "linear",
        2e-4,
        why="projector only at 2e-4: at the paper's fine-tuning rate 2e-5 a 32x8 pilot stayed at 0% on "
        "Animal-MNIST (2e-4: 10%), so the demo passes --lr 2e-4; `finetune`'s default stays 2e-5",
    ),
    "lora": MethodRecipe("lora", why="projector + LoRA, LLaVA-1.5's LoRA rate 2e-4 (the method's default)"),
    "msgm": MethodRecipe("msgm", why="LoRA with soft targets (alpha 0.01), rate 2e-4 (default)"),
    "full": MethodRecipe("full", why="projector + LM, CL-LLaVA's fine-tuning rate 2e-5 (default)"),
    "rehearsal": MethodRecipe(
        "lora",
        rehearsal=True,
        why="the lora run with a share of the base's alignment data (digits, Fashion-MNIST) mixed in",
    ),
}
QUICK_METHODS = ("linear", "lora")
FULL_METHODS = ("linear", "lora", "msgm", "full", "rehearsal")
QUICK_CURVE = (0.5,)
FULL_CURVE = (0.25, 0.5)
"""Fractions of the run at which a snapshot is evaluated (the end is the run's own model)."""
FUSIONS = ("tailor", "dare")


@dataclass(frozen=True)
class DemoOptions:
    """Everything that decides what the demo runs (sizes are per stage; see ``emtbench demo --help``)."""

    out: Path
    quick: bool = False
    base_model: Path | None = None
    limit: int = 64
    """Held-out test images per EMT task (why 64: ``emtbench demo --help``, "Test images")."""
    language_docs: int = 5
    """Evaluate the first N module docstrings of ``emt_stdlib_ppl`` (its fixed order). 5 (was 10): the
    first of the two time levers fixed with the design (``--language-docs``, then ``--limit``), applied
    because the 10-document probe took ~20 s of fp32 compute per evaluation stage, a third of the demo."""
    train_examples: int = 256
    train_steps: int = 32
    train_batch_size: int = 8
    train_prompt: str = "short"
    train_bf16: bool = True
    """bf16 mixed precision for every fine-tune, as LLaVA-1.5's released scripts train (``--bf16``);
    1.5x faster per LoRA step than fp32 on this CPU. ``--fp32-training`` turns it off."""
    rehearsal_fraction: float = 0.125
    """Share of each alignment set mixed in by the ``rehearsal`` run (of ``train_examples`` per set)."""
    calib_samples: int = 16
    tailor_layers: str = r"multi_modal_projector|layers\.(2[6-9])\."
    """Model Tailor on the projector and the last 4 of SmolLM2's 30 decoder layers (the rest revert)."""
    drop_rate: float = 0.9
    eval_batch_size: int = 64
    """One batch per EMT task at --limit 64: the flagship computes the rows' shared prompt prefix once."""
    max_gen_toks: int = 32
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        sizes = ("limit", "language_docs", "train_steps", "train_examples", "train_batch_size", "calib_samples",
                 "eval_batch_size", "max_gen_toks")  # fmt: skip
        for name in sizes:
            value = getattr(self, name)
            if value < 1:
                raise EmtbenchError(f"must be at least 1, got {value}", where=f"--{name.replace('_', '-')}")
        if self.language_docs > 20:
            raise EmtbenchError(
                "emt_stdlib_ppl has 20 documents", where="--language-docs", fix="pass 1 to 20"
            )
        if self.train_prompt not in ("short", "eval"):
            raise EmtbenchError(
                f"unknown training prompt {self.train_prompt!r}", where="--train-prompt", fix="short or eval"
            )
        if not 0.0 < self.rehearsal_fraction <= 1.0:
            raise EmtbenchError(
                f"must be in (0, 1], got {self.rehearsal_fraction}", where="--rehearsal-fraction"
            )

    @property
    def methods(self) -> tuple[str, ...]:
        return QUICK_METHODS if self.quick else FULL_METHODS

    @property
    def fuses(self) -> bool:
        """Model Tailor and DARE run in the full demo only (on the run that forgets most)."""
        return not self.quick

    @property
    def curve_steps(self) -> tuple[int, ...]:
        """Optimizer steps evaluated before the end of each run (from that run's snapshots)."""
        return self._steps(QUICK_CURVE if self.quick else FULL_CURVE)

    @property
    def snapshot_steps(self) -> tuple[int, ...]:
        """Steps each fine-tuning run saves: the full demo's, also with --quick, so a full run in the
        folder of a --quick run reuses its fine-tuning stages (and the evaluations they share)."""
        return self._steps((*QUICK_CURVE, *FULL_CURVE))

    def _steps(self, fractions: tuple[float, ...]) -> tuple[int, ...]:
        steps = sorted({max(1, round(self.train_steps * f)) for f in fractions})
        return tuple(step for step in steps if step < self.train_steps)


def options_record(options: DemoOptions) -> dict[str, Any]:
    record = asdict(options)
    record["out"] = str(options.out)
    record["base_model"] = None if options.base_model is None else str(options.base_model)
    record["methods"] = {
        name: {**asdict(METHODS[name]), "learning_rate": METHODS[name].learning_rate}
        for name in options.methods
    }
    record["snapshot_steps"] = list(options.snapshot_steps)
    record["curve_steps"] = list(options.curve_steps)
    record["fuses"] = options.fuses
    record["tasks"] = {"target": TARGET_TASK, "others": list(OTHER_TASKS), "language": LANGUAGE_TASK}
    return record
