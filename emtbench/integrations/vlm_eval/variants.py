"""Which EMT subset a vlm-evaluation dataset id stands for, and where its files go.

vlm-evaluation (TRI-ML's harness for Prismatic) names one *dataset family* per benchmark
(``vqa-v2``) and one *dataset id* per evaluated subset (``vqa-v2-slim``); its results land in
``results_dir/<family>/<dataset_id>/<model_id>/``. Here every EMT probe is a family
(``emt-cifar10``) and every (split, fraction, seed) an id (``emt-cifar10-train-20pct-seed0``), so
two subsets never share a results folder. The subset itself is drawn by emtbench's own loader and
:func:`emtbench.datasets.loading.subset`, the code the lm-eval tasks run, so both harnesses see the same images.

Nothing here imports vlm-evaluation, torch or lm-eval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from emtbench.core.errors import EmtbenchError
from emtbench.datasets.emt import DATASETS, EMTDataset, get_dataset
from emtbench.datasets.loading import DataOptions

FAMILY_PREFIX = "emt-"
PAPER_FRACTION = 0.2
"""The EMT paper evaluated fine-tuned models on a random 20% of the training split (no seed published)."""


def family_of(dataset: EMTDataset) -> str:
    """``cifar10`` -> ``emt-cifar10``; ``fashion_mnist`` -> ``emt-fashion-mnist`` (vlm-evaluation's style)."""
    return FAMILY_PREFIX + dataset.name.replace("_", "-")


FAMILIES: dict[str, EMTDataset] = {family_of(d): d for d in DATASETS.values()}


def dataset_for_family(family: str) -> EMTDataset:
    if family not in FAMILIES:
        raise EmtbenchError(
            f"{family!r} is not an EMT dataset family", fix=f"use one of: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[family]


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}".replace(".", "p")


@dataclass(frozen=True)
class EMTVariant:
    """One EMT subset as both harnesses select it: the ``--metadata`` of ``emtbench eval``."""

    dataset: EMTDataset
    data: DataOptions = field(default_factory=DataOptions)
    judge: dict[str, Any] = field(default_factory=dict)
    """Judge settings (``judge`` plus its ``judge_*`` options), as ``--metadata`` spells them."""

    @property
    def family(self) -> str:
        return family_of(self.dataset)

    @property
    def split(self) -> str:
        return self.data.split or self.dataset.default_split

    @property
    def dataset_id(self) -> str:
        """``emt-digits-test``, ``emt-cifar10-train-20pct-seed0``: the subset, never the source or judge."""
        name = f"{self.family}-{self.split}"
        if self.data.fraction is not None and self.data.fraction < 1.0:
            name += f"-{_percent(self.data.fraction)}pct-seed{self.data.seed}"
        return name

    @property
    def folder(self) -> Path:
        """The variant's index folder, relative to vlm-evaluation's ``root_dir``."""
        return Path("datasets") / self.family / self.dataset_id

    @property
    def index_file(self) -> Path:
        return self.folder / "metadata.json"

    def data_metadata(self) -> dict[str, Any]:
        """The data-selecting ``--metadata`` keys that differ from the defaults."""
        values = {
            "data_dir": self.data.data_dir,
            "split": self.split,
            "fraction": self.data.fraction,
            "seed": self.data.seed if self.data.fraction is not None else None,
            "source": self.data.source if self.data.source != "auto" else None,
        }
        return {key: value for key, value in values.items() if value is not None}

    def metadata(self) -> dict[str, Any]:
        """The ``emtbench eval --metadata`` that evaluates the same subset with the same judge."""
        return {**self.data_metadata(), **self.judge}


def make_variant(
    name_or_family: str,
    *,
    split: str | None = None,
    fraction: float | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    source: str = "auto",
    judge: dict[str, Any] | None = None,
) -> EMTVariant:
    """Build and check a variant; bad values fail with the same messages as ``--metadata``."""
    from emtbench.tasks.runtime import check_metadata_keys

    dataset = get_dataset(name_or_family.removeprefix(FAMILY_PREFIX).replace("-", "_"))
    metadata: dict[str, Any] = {"seed": seed, "source": source}
    if split:
        metadata["split"] = split
    if fraction is not None:
        metadata["fraction"] = fraction
    if data_dir:
        metadata["data_dir"] = str(data_dir)
    judge = {key: value for key, value in (judge or {}).items() if value not in (None, "")}
    check_metadata_keys(judge)
    stray = sorted(set(judge) - _judge_keys())
    if stray:
        raise EmtbenchError(
            f"{', '.join(stray)} select data, not the judge",
            where="judge options",
            fix="set them as the dataset's own fields (split, fraction, seed, data_dir, source)",
        )
    return EMTVariant(dataset, DataOptions.from_metadata(metadata), judge)


def _judge_keys() -> set[str]:
    from emtbench.judges.base import judge_option_keys

    return judge_option_keys()


def standard_variants(dataset: EMTDataset) -> tuple[EMTVariant, ...]:
    """What ``prepare.py`` writes and what is registered by name: the test split, and the paper's share."""
    return (
        make_variant(dataset.name),
        make_variant(dataset.name, split="train", fraction=PAPER_FRACTION, seed=0),
    )


class _TaskYamlLoader(yaml.SafeLoader):
    """Reads lm-eval task YAML without running its ``!function`` tags (they are only named here)."""


_TaskYamlLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


@cache
def generation_settings() -> dict[str, Any]:
    """The EMT tasks' ``generation_kwargs`` from their lm-eval YAML, so both harnesses decode alike."""
    text = resources.files("emtbench.tasks").joinpath("emt/_emt_template_yaml").read_text(encoding="utf-8")
    return dict(yaml.load(text, Loader=_TaskYamlLoader)["generation_kwargs"])


def max_new_tokens() -> int:
    return int(generation_settings()["max_gen_toks"])
