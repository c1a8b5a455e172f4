"""Run the EMT probes inside TRI-ML's vlm-evaluation (Prismatic's own harness), scored as emtbench scores them.

Optional: needs the ``vlm_eval`` package (installed from its source; it is not on PyPI) and
``emtbench[vlm-eval]``. Nothing here imports it until :func:`register` or :func:`run_script` is called.

    emtbench vlm-eval run vlm-evaluation/scripts/evaluate.py --dataset.type emt-cifar10-test \\
        --model_family prismatic --model_id prism-dinosiglip+7b --hf_token HF_TOKEN
    emtbench vlm-eval run vlm-evaluation/scripts/score.py --dataset.type emt-cifar10-test \\
        --model_id prism-dinosiglip+7b
    emtbench vlm-eval collect results/ --model_id prism-dinosiglip+7b --output results/emtbench/prism-dinosiglip+7b

See docs/vlm-eval.md.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "register": "emtbench.integrations.vlm_eval.registration",
    "run_script": "emtbench.integrations.vlm_eval.registration",
    "vlm_eval_available": "emtbench.integrations.vlm_eval.registration",
    "EMTVariant": "emtbench.integrations.vlm_eval.variants",
    "make_variant": "emtbench.integrations.vlm_eval.variants",
    "standard_variants": "emtbench.integrations.vlm_eval.variants",
    "build_index": "emtbench.integrations.vlm_eval.index",
    "read_index": "emtbench.integrations.vlm_eval.index",
    "judge_generations": "emtbench.integrations.vlm_eval.scoring",
    "write_lm_eval_results": "emtbench.integrations.vlm_eval.scoring",
    "collect_results": "emtbench.integrations.vlm_eval.scoring",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
