"""The offline flagship MLLM: EfficientNet-Lite0 + LLaVA-1.5 projector + SmolLM2-135M-Instruct (SPEC §7).

:func:`register` adds its config/model/processor to transformers' Auto classes; ``import emtbench``
arranges for it to run as soon as transformers' auto module is imported, so checkpoints load by path
(``AutoModelForImageTextToText.from_pretrained(dir)``, lm-eval's ``hf-multimodal``) with no extra step.
"""

from __future__ import annotations

import sys

MODEL_TYPE = "emt_flagship"
_registered = False


def register() -> None:
    """Register the flagship classes with AutoConfig/AutoModel/AutoModelForImageTextToText/AutoProcessor (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    from emtbench.models.flagship.configuration_emt_flagship import EfficientNetLiteConfig, EmtFlagshipConfig
    from emtbench.models.flagship.modeling_emt_flagship import (
        EfficientNetLiteVisionModel,
        EmtFlagshipForConditionalGeneration,
        EmtFlagshipModel,
    )
    from emtbench.models.flagship.processing_emt_flagship import EmtFlagshipProcessor

    AutoConfig.register(EfficientNetLiteConfig.model_type, EfficientNetLiteConfig, exist_ok=True)
    AutoConfig.register(EmtFlagshipConfig.model_type, EmtFlagshipConfig, exist_ok=True)
    AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteVisionModel, exist_ok=True)
    AutoModel.register(EmtFlagshipConfig, EmtFlagshipModel, exist_ok=True)
    AutoModelForImageTextToText.register(
        EmtFlagshipConfig, EmtFlagshipForConditionalGeneration, exist_ok=True
    )
    AutoProcessor.register(EmtFlagshipConfig, EmtFlagshipProcessor, exist_ok=True)
    _registered = True  # only now: a failed attempt (e.g. during a circular import) may be retried


class _RegisterAfterTransformersImport:
    """Meta-path finder that runs :func:`register` right after ``import transformers`` completes.

    Why: importing transformers (and torch) costs seconds, which ``emtbench --help`` must not pay, yet
    the Auto classes must know the flagship before any user code calls ``from_pretrained``.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_then_register(module):
            original_exec(module)
            _register_quietly()

        spec.loader.exec_module = exec_then_register
        return spec


def _register_quietly() -> None:
    try:
        register()
    except Exception as error:  # a broken optional model must never break `import transformers`
        import warnings

        warnings.warn(
            f"emtbench could not register its flagship model with transformers: {error}", stacklevel=2
        )


def register_when_transformers_loads() -> None:
    """Register now if transformers is already imported, else as soon as it is."""
    if "transformers" in sys.modules:
        _register_quietly()
    elif not any(isinstance(f, _RegisterAfterTransformersImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTransformersImport())
