"""The EMT datasets as vlm-evaluation ``DatasetConfig`` choices (its draccus ``ChoiceRegistry``).

vlm-evaluation selects what to evaluate with ``--dataset.type <dataset_id>``; each id is a
``DatasetConfig`` subclass registered with ``DatasetConfig.register_subclass``. Two ids per EMT probe
are registered (the test split, and the paper's 20% of train with seed 0); any other subset is one of
them with its fields overridden, e.g. ``--dataset.type emt-cifar10-test --dataset.split train
--dataset.fraction 0.1 --dataset.seed 3``: the fields are ``emtbench eval``'s ``--metadata`` keys
(split, fraction, seed, data_dir, source, judge and, as JSON, the judge's own options), and
``dataset_id``, ``index_file`` and ``expected_examples`` follow from them.

Imports vlm-evaluation (``vlm_eval.conf``), so it is imported only by :func:`.register`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Optional

from vlm_eval.conf import DatasetConfig

from emtbench.core.errors import EmtbenchError
from emtbench.integrations.vlm_eval.harness import ACTIVE_VARIANTS, local_copy
from emtbench.integrations.vlm_eval.index import read_index
from emtbench.integrations.vlm_eval.variants import FAMILIES, EMTVariant, make_variant, standard_variants

DEFAULT_ROOT_DIR = Path("../../datasets/vlm-evaluation")
"""vlm-evaluation's own default ``root_dir`` for every dataset config."""


@dataclass
class EMTDatasetConfig(DatasetConfig):
    # fmt: off
    dataset_family: str = ""                    # emt-<probe>, set by each registered subclass
    dataset_id: str = ""                        # derived from split/fraction/seed (never set it by hand)
    split: str = "test"                         # split of the probe's dataset (train | test | ...)

    expected_examples: int = -1                 # derived from the index file once it exists

    root_dir: Path = DEFAULT_ROOT_DIR           # vlm-evaluation's root for datasets (download/, datasets/)
    index_file: Path = Path()                   # derived: datasets/<family>/<dataset_id>/metadata.json
    annotations_file: Path = Path()             # derived: the index file (it holds the labels)

    fraction: float | None = None            # evaluate a fixed random share of the split (paper: 0.2)
    seed: int = 0                               # seed of that share
    data_dir: Path | None = None             # local copy (default: root_dir/download/<family> if filled)
    source: str = "auto"                        # auto (Hub, else offline copy) | hub | offline
    judge: str = "rule"                         # rule | embedding | llm | local_llm | cascade
    judge_options: str = ""                     # the judge's own --metadata keys as JSON, e.g. {"judge_model": "gpt-4o-mini"}
    # fmt: on

    def __post_init__(self) -> None:
        self.variant = self.emt_variant()
        self.dataset_id = self.variant.dataset_id
        self.index_file = self.annotations_file = self.variant.index_file
        index = Path(self.root_dir) / self.index_file
        if index.is_file():
            self.expected_examples = len(read_index(self.root_dir, self.index_file)[1])
        ACTIVE_VARIANTS[self.dataset_id] = self.variant

    def emt_variant(self) -> EMTVariant:
        try:
            options = json.loads(self.judge_options) if self.judge_options else {}
        except json.JSONDecodeError as error:
            raise EmtbenchError(
                f"judge_options is not JSON ({error})",
                where="--dataset.judge_options",
                fix='e.g. --dataset.judge_options \'{"judge_model": "gpt-4o-mini"}\'',
            ) from None
        if not isinstance(options, dict):
            raise EmtbenchError("judge_options must be a JSON object", where="--dataset.judge_options")
        data_dir = self.data_dir or local_copy(Path(self.root_dir), self.dataset_family)
        return make_variant(
            self.dataset_family,
            split=self.split,
            fraction=self.fraction,
            seed=self.seed,
            data_dir=data_dir,
            source=self.source,
            judge={"judge": self.judge, **options} if self.judge != "rule" or options else {},
        )


def _config_class(variant: EMTVariant) -> type:
    name = "EMT" + "".join(part.capitalize() for part in variant.dataset_id.split("-")[1:]) + "DatasetConfig"
    return make_dataclass(
        name,
        [
            ("dataset_family", str, field(default=variant.family)),
            ("split", str, field(default=variant.split)),
            ("fraction", Optional[float], field(default=variant.data.fraction)),  # noqa: UP045
            ("seed", int, field(default=variant.data.seed)),
        ],
        bases=(EMTDatasetConfig,),
        namespace={"__module__": __name__},
    )


CONFIGS: dict[str, type] = {
    variant.dataset_id: _config_class(variant)
    for dataset in FAMILIES.values()
    for variant in standard_variants(dataset)
}
"""Registered dataset id -> config class (``emt-cifar10-test``, ``emt-cifar10-train-20pct-seed0``, ...)."""


def register_configs() -> None:
    """Add the EMT configs to vlm-evaluation's ``DatasetConfig`` choices (once)."""
    for dataset_id, cls in CONFIGS.items():
        try:
            if DatasetConfig.get_choice_class(dataset_id) is cls:
                continue
        except KeyError:  # not registered yet
            pass
        DatasetConfig.register_subclass(dataset_id, cls)
