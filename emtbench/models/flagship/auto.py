"""Registration of the flagship's config, model and processor with transformers' Auto classes.

Kept apart from the four model files (``configuration_emt_flagship``, ``modeling_emt_flagship``,
``processing_emt_flagship``, ``efficientnet_lite``), which import nothing from emtbench so that they can
be copied into a checkpoint as Hub remote code.
"""

from __future__ import annotations

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

    if _registered:  # the import above may have run the import hook, which registers
        return
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
    _registered = True
