"""Register the EMT probes with vlm-evaluation the way it registers its own datasets, and run its scripts.

A dataset in vlm-evaluation is an entry in five tables, each keyed by dataset family:
``vlm_eval.tasks.registry.DATASET_REGISTRY`` (paths and downloads), ``vlm_eval.tasks.builders.
BUILDER_DISPATCH`` (index building), ``vlm_eval.tasks.harnesses.DATASET2RUNNER`` / ``DATASET2SCORER``,
plus its ``DatasetConfig`` choices, and every model class's ``get_prompt_fn`` table.
:func:`register` adds the EMT families to each (its ``DatasetRegistry`` enum is closed and only
documents the built-in ids, so it is left alone). Its scripts then run unchanged:
``scripts/datasets/prepare.py``, ``scripts/evaluate.py`` and ``scripts/score.py``.
"""

from __future__ import annotations

import logging
import runpy
import sys
from pathlib import Path

from emtbench.core.errors import EmtbenchError

logger = logging.getLogger(__name__)

INSTALL_FIX = (
    "install vlm-evaluation from a checkout of https://github.com/TRI-ML/vlm-evaluation "
    "(`pip install --no-deps -e PATH`, then its light dependencies: `pip install 'emtbench[vlm-eval]'`); "
    "it is not on PyPI"
)


def vlm_eval_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vlm_eval") is not None


def _transformers_compat() -> None:
    """vlm-evaluation (written for transformers 4.34) imports ``BatchEncoding`` from
    ``transformers.tokenization_utils`` for a type hint; transformers 5 no longer has it there. Put
    the name back (an alias of ``transformers.BatchEncoding``, nothing else) so its modules import."""
    import transformers
    import transformers.tokenization_utils as tokenization_utils

    if not hasattr(tokenization_utils, "BatchEncoding"):
        tokenization_utils.BatchEncoding = transformers.BatchEncoding


def register(*, models: bool = True) -> list[str]:
    """Add the EMT families to vlm-evaluation's tables; return the registered dataset ids.

    ``models=False`` leaves the model tables alone (``vlm_eval.models`` imports every model
    family's own package: prismatic, llava, lavis), as preparing and scoring never need them.
    """
    if not vlm_eval_available():
        raise EmtbenchError("vlm-evaluation (the vlm_eval package) is not installed", fix=INSTALL_FIX)
    _transformers_compat()
    from vlm_eval.tasks import builders, harnesses
    from vlm_eval.tasks.registry import DATASET_REGISTRY, EvaluationDatasetType

    from emtbench.integrations.vlm_eval import config
    from emtbench.integrations.vlm_eval.harness import EMTIndexDataset, EMTScorer, EMTTaskRunner, make_builder
    from emtbench.integrations.vlm_eval.variants import FAMILIES, standard_variants

    for family, dataset in FAMILIES.items():
        DATASET_REGISTRY[family] = {
            "dataset_type": EvaluationDatasetType.vqa,  # free-form answers, judged afterwards
            "download": [],  # emtbench's loader fetches the images (Hub, offline copy or download/<family>)
            "paths": {
                "download_dir": Path("download") / family,
                "dataset_dir": Path("datasets") / family,
                "index_files": [variant.index_file for variant in standard_variants(dataset)],
            },
        }
        builders.BUILDER_DISPATCH[family] = {
            "build_indices": make_builder(family),
            "get_index_datasets": EMTIndexDataset,
        }
        harnesses.DATASET2RUNNER[family] = EMTTaskRunner
        harnesses.DATASET2SCORER[family] = EMTScorer
    config.register_configs()
    if models:
        register_models()
    return list(config.CONFIGS)


def register_models() -> None:
    """EMT prompts for vlm-evaluation's model families, and the ``emtbench-hf`` family."""
    from emtbench.integrations.vlm_eval.models import (
        EMT_PROMPTS,
        TRANSFORMERS_FAMILY,
        TransformersVLM,
        with_emt_prompts,
    )

    try:
        import vlm_eval.models as vlm_models
    except ImportError as error:  # a model family's own package (prismatic, llava, lavis) is missing
        logger.warning("vlm_eval.models is not importable (%s): EMT prompts not added to its models", error)
        return
    table = vlm_models.FAMILY2INITIALIZER
    for family in EMT_PROMPTS:
        if family in table and not getattr(table[family], "emtbench_prompts", False):
            table[family] = with_emt_prompts(table[family], family)
    table[TRANSFORMERS_FAMILY] = TransformersVLM


def run_script(script: str | Path, argv: list[str]) -> int:
    """Run one of vlm-evaluation's scripts (prepare / evaluate / score) with the EMT probes registered."""
    script = Path(script)
    if not script.is_file():
        raise EmtbenchError(
            "script not found",
            where=str(script),
            fix="pass a script of a vlm-evaluation checkout, e.g. vlm-evaluation/scripts/evaluate.py",
        )
    register(models=script.name not in ("prepare.py", "score.py"))
    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
    return 0
