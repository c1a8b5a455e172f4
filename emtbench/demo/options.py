"""What decides a demo run: :class:`DemoOptions` and the recipe's fixed choices (tasks, methods, files)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError

RECIPE_VERSION = 2
"""Part of every stage key: bump it when the recipe's commands change meaning (2: commands generated from the API options)."""
MARKER = "stage.json"
REPORT_FILE = "demo_report.json"
TABLE_FILE = "demo_table.txt"
EMT_TASKS = ("emt_digits", "emt_fashion_mnist")
LANGUAGE_TASK = "emt_stdlib_ppl"
TARGET_DATASET = "digits"
"""Fine-tuning data: scikit-learn digits' training split, disjoint from the 360-image test split evaluated."""
QUICK_METHODS = ("linear", "lora", "msgm")
FULL_METHODS = (*QUICK_METHODS, "full")
FUSIONS = ("tailor", "dare")


@dataclass(frozen=True)
class DemoOptions:
    """Everything that decides what the demo runs (sizes are per stage; see ``emtbench demo --help``)."""

    out: Path
    quick: bool = False
    base_model: Path | None = None
    limit: int = 16
    """Held-out test images per EMT task."""
    language_docs: int = 4
    """Evaluate the first N module docstrings of ``emt_stdlib_ppl`` (its fixed order)."""
    train_examples: int = 128
    train_steps: int = 4
    train_batch_size: int = 4
    calib_samples: int = 8
    tailor_layers: str = r"multi_modal_projector|layers\.(2[6-9])\."
    """Model Tailor on the projector and the last 4 of SmolLM2's 30 decoder layers (the rest revert)."""
    drop_rate: float = 0.9
    eval_batch_size: int = 16
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

    @property
    def methods(self) -> tuple[str, ...]:
        return QUICK_METHODS if self.quick else FULL_METHODS

    @property
    def fused_methods(self) -> tuple[str, ...]:
        """Fine-tuned runs that Model Tailor and DARE are applied to."""
        return ("lora",) if self.quick else ("lora", "full")


def options_record(options: DemoOptions) -> dict[str, Any]:
    record = asdict(options)
    record["out"] = str(options.out)
    record["base_model"] = None if options.base_model is None else str(options.base_model)
    record["methods"] = list(options.methods)
    record["fused_methods"] = list(options.fused_methods)
    return record
