"""The offline flagship MLLM: EfficientNet-Lite0 + LLaVA-1.5 projector + SmolLM2-135M-Instruct (docs/design.md §8).

Importing this package registers the flagship with transformers' Auto classes (:mod:`.auto`), so
checkpoints load by path (``AutoModelForImageTextToText.from_pretrained(dir)``, lm-eval's
``hf-multimodal``) with no extra step. ``import emtbench`` arranges the same registration for when
transformers is first imported (:func:`emtbench.models.registration.register_flagship_when_transformers_loads`).

Why here, before any submodule runs: a submodule imported first (``configuration_emt_flagship``)
would otherwise be the first to import transformers, and the registration that import triggers
would find that submodule half-initialised.
"""

from __future__ import annotations

from emtbench.models.flagship.auto import register

MODEL_TYPE = "emt_flagship"

register()

__all__ = ["MODEL_TYPE", "register"]
