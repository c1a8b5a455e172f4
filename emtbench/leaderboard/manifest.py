"""The run manifest: which results to compare, and how each run relates to the others.

Validated with pydantic so every schema problem is reported at once, as ``FILE: runs[2].base: ...``.
Paths inside the manifest are relative to the manifest's own folder.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import parse_yaml, read_text

DEFAULT_GROUPS_FILE = "groups.yaml"
BASE_METHODS = frozenset({"zero-shot", "pretrained", "encoder"})

EXAMPLE = """\
title: EMT forgetting on LLaVA-1.5
runs:
  - name: llava-1.5-7b
    results: results/llava-1.5-7b/        # lm-eval --output_path (or one results_*.json)
    method: zero-shot
  - name: llava-1.5-7b-lora-mnist
    results: results/lora-mnist/
    base: llava-1.5-7b                    # the run it was fine-tuned from (for Δ)
    method: lora
    target_tasks: [emt_mnist]             # original_tasks default to all the others
    run_record: checkpoints/lora-mnist/emtbench_run.json   # or params_changed: 0.12
    accuracy_matrix: checkpoints/lora-seq/accuracy_matrix.json   # continual runs only
"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


NonEmpty = Annotated[str, Field(min_length=1)]


class BootstrapOptions(_Strict):
    resamples: int = Field(1000, ge=10, le=100_000)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0


class RunEntry(_Strict):
    """One evaluated model. Only ``name`` and ``results`` are required."""

    name: NonEmpty
    results: NonEmpty
    samples: list[NonEmpty] | None = None
    base: NonEmpty | None = None
    method: NonEmpty = "zero-shot"
    target_tasks: list[NonEmpty] = []
    original_tasks: list[NonEmpty] | None = None
    params_changed: float | None = Field(None, ge=0, le=1)
    run_record: NonEmpty | None = None
    accuracy_matrix: NonEmpty | None = None
    encoder: NonEmpty | None = None
    curve: NonEmpty | None = None
    """Runs with the same ``curve`` are one fine-tuning run evaluated at several ``step`` s (the page
    plots accuracy against step per task; the run's ``base`` is step 0)."""
    step: int | None = Field(None, ge=0)
    """Optimizer steps of fine-tuning behind this model (for ``curve``)."""
    url: str | None = None
    notes: str | None = None

    @field_validator("url")
    @classmethod
    def _web_url(cls, url: str | None) -> str | None:
        # Only web links become <a href>: a javascript: or data: URL from a manifest must never run.
        if url is not None and not url.lower().startswith(("https://", "http://")):
            raise ValueError("must start with https:// or http://")
        return url


class Manifest(_Strict):
    title: NonEmpty = "emtbench forgetting leaderboard"
    description: str | None = None
    groups: dict[NonEmpty, list[NonEmpty]] = {}
    tasks: list[NonEmpty] | None = None
    metrics: dict[NonEmpty, NonEmpty] = {}
    bootstrap: BootstrapOptions = BootstrapOptions()
    min_judge_coverage: float = Field(0.95, ge=0, le=1)
    """Runs whose judge could judge a smaller share of a task's answers are flagged on the page."""
    runs: list[RunEntry] = Field(min_length=1)


def default_groups() -> dict[str, list[str]]:
    """Task groups shipped with the package (EMT, NLU, NLG, VL)."""
    text = files("emtbench.leaderboard").joinpath(DEFAULT_GROUPS_FILE).read_text(encoding="utf-8")
    return {str(name): [str(task) for task in tasks] for name, tasks in yaml.safe_load(text).items()}


def _field_path(location: tuple) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest; every problem is listed with its field path."""
    path = Path(path)
    text = read_text(path, what="manifest", fix="pass the path of a manifest YAML")
    # Strict safe loading: no Python objects, duplicate keys, .nan/.inf or alias bombs are errors.
    data = parse_yaml(text, str(path), fix="see `emtbench leaderboard build --help` for the format")
    if not isinstance(data, dict):
        raise EmtbenchError(
            "the manifest must be a mapping with a `runs:` list",
            where=str(path),
            fix=f"for example:\n{EXAMPLE}",
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as error:
        problems = [f"  {_field_path(item['loc'])}: {item['msg']}" for item in error.errors()]
        raise EmtbenchError(
            f"{len(problems)} problem(s) in the manifest:\n" + "\n".join(problems),
            where=str(path),
            fix=f"see `emtbench leaderboard build --help`; a valid manifest looks like:\n{EXAMPLE}",
        ) from None
