"""emtbench: catastrophic-forgetting benchmarks for multimodal LLMs, on lm-evaluation-harness.

The Python API every ``emtbench`` command is a thin layer over (imported lazily, as lm-eval does, so
``import emtbench`` costs no torch)::

    import emtbench
    base = emtbench.build_base(output="models/flagship-base")
    before = emtbench.evaluate(tasks=["emt_digits"], model_args={"pretrained": str(base.folder)},
                               apply_chat_template=True, output_path="results/base")
    tuned = emtbench.finetune(model=str(base.folder), data="emt:digits", method="lora", max_steps=50,
                              output="models/lora")
    fused = emtbench.tailor(pretrained=str(base.folder), finetuned=[str(tuned.output)],
                            calib_data=["emt:digits"], output="models/tailored")

Each function takes an options object or its fields as keywords and returns a result object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emtbench.core.version import __version__
from emtbench.models.registration import register_flagship_when_transformers_loads

register_flagship_when_transformers_loads()  # cheap: defers the Auto-class registration until transformers is imported

_API: dict[str, str] = {
    "EmtbenchError": "emtbench.core.errors",
    "evaluate": "emtbench.tasks.evaluation",
    "EvaluateOptions": "emtbench.tasks.evaluation",
    "EvaluateResult": "emtbench.tasks.evaluation",
    "finetune": "emtbench.methods.finetune",
    "FinetuneOptions": "emtbench.methods.finetune",
    "FinetuneResult": "emtbench.methods.finetune",
    "TrainSettings": "emtbench.methods.finetune",
    "TrainingOptions": "emtbench.methods.finetune",
    "continual": "emtbench.methods.continual",
    "ContinualOptions": "emtbench.methods.continual",
    "ContinualResult": "emtbench.methods.continual",
    "merge": "emtbench.methods.fusion.pipeline",
    "tailor": "emtbench.methods.fusion.pipeline",
    "MergeOptions": "emtbench.methods.fusion.pipeline",
    "FusionResult": "emtbench.methods.fusion.pipeline",
    "build_base": "emtbench.methods.build_base",
    "AlignmentOptions": "emtbench.methods.build_base",
    "BuildBaseResult": "emtbench.methods.build_base",
    "build_leaderboard": "emtbench.leaderboard.site",
    "LeaderboardSite": "emtbench.leaderboard.site",
    "publish_leaderboard": "emtbench.leaderboard.publish",
    "submit_results": "emtbench.leaderboard.submissions",
    "submit_request": "emtbench.leaderboard.submissions",
    "run_worker": "emtbench.leaderboard.worker",
    "WorkerOptions": "emtbench.leaderboard.worker",
}
"""Public name -> the module that defines it."""

__all__ = [
    "AlignmentOptions",
    "BuildBaseResult",
    "ContinualOptions",
    "ContinualResult",
    "EmtbenchError",
    "EvaluateOptions",
    "EvaluateResult",
    "FinetuneOptions",
    "FinetuneResult",
    "FusionResult",
    "LeaderboardSite",
    "MergeOptions",
    "TrainSettings",
    "TrainingOptions",
    "WorkerOptions",
    "__version__",
    "build_base",
    "build_leaderboard",
    "continual",
    "evaluate",
    "finetune",
    "merge",
    "publish_leaderboard",
    "run_worker",
    "submit_request",
    "submit_results",
    "tailor",
]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'emtbench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:
    from emtbench.core.errors import EmtbenchError
    from emtbench.leaderboard.publish import publish_leaderboard
    from emtbench.leaderboard.site import LeaderboardSite, build_leaderboard
    from emtbench.leaderboard.submissions import submit_request, submit_results
    from emtbench.leaderboard.worker import WorkerOptions, run_worker
    from emtbench.methods.build_base import AlignmentOptions, BuildBaseResult, build_base
    from emtbench.methods.continual import ContinualOptions, ContinualResult, continual
    from emtbench.methods.finetune import (
        FinetuneOptions,
        FinetuneResult,
        TrainingOptions,
        TrainSettings,
        finetune,
    )
    from emtbench.methods.fusion.pipeline import FusionResult, MergeOptions, merge, tailor
    from emtbench.tasks.evaluation import EvaluateOptions, EvaluateResult, evaluate
