"""Configs of the offline flagship MLLM: an EfficientNet-Lite vision tower and the LLaVA-recipe wrapper."""

from __future__ import annotations

from typing import ClassVar

from transformers import AutoConfig, PretrainedConfig

from .efficientnet_lite import LITE0_STAGES


class EfficientNetLiteConfig(PretrainedConfig):
    """Shape of an EfficientNet-Lite tower; the defaults are Lite0 (7x7x1280 features at 224 px)."""

    model_type = "emt_efficientnet_lite"

    def __init__(
        self,
        stages: list[list[int]] | None = None,
        stem_channels: int = 32,
        head_channels: int = 1280,
        image_size: int = 224,
        **kwargs,
    ):
        self.stages = [list(s) for s in stages] if stages else [
            [s.kernel, s.stride, s.expand, s.channels, s.repeats] for s in LITE0_STAGES
        ]  # fmt: skip
        self.stem_channels = stem_channels
        self.head_channels = head_channels
        self.image_size = image_size
        super().__init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        return self.head_channels


class EmtFlagshipConfig(PretrainedConfig):
    """LLaVA-1.5 recipe: vision feature grid -> two-layer GELU MLP -> LM embeddings at ``<image>`` tokens."""

    model_type = "emt_flagship"
    sub_configs: ClassVar[dict] = {"text_config": AutoConfig, "vision_config": EfficientNetLiteConfig}
    attribute_map: ClassVar[dict] = {"image_token_index": "image_token_id"}

    def __init__(
        self,
        vision_config: dict | EfficientNetLiteConfig | None = None,
        text_config: dict | PretrainedConfig | None = None,
        image_token_id: int | None = None,
        image_grid: int = 3,
        projector_hidden_act: str = "gelu",
        **kwargs,
    ):
        from transformers import CONFIG_MAPPING

        if isinstance(vision_config, dict):
            vision_config = EfficientNetLiteConfig(**vision_config)
        self.vision_config = vision_config or EfficientNetLiteConfig()
        if isinstance(text_config, dict):
            text_config = CONFIG_MAPPING[text_config.get("model_type", "llama")](**text_config)
        self.text_config = text_config or CONFIG_MAPPING["llama"]()
        self.image_token_id = image_token_id
        self.image_grid = image_grid
        """The 7x7 feature map is average-pooled to image_grid x image_grid image tokens (fewer tokens, faster on CPU)."""
        self.projector_hidden_act = projector_hidden_act
        kwargs.setdefault("tie_word_embeddings", getattr(self.text_config, "tie_word_embeddings", False))
        super().__init__(**kwargs)

    @property
    def image_seq_length(self) -> int:
        return self.image_grid * self.image_grid


# ``save_pretrained`` writes ``auto_map`` and copies this file (and its relative imports) into the
# checkpoint, so ``AutoConfig.from_pretrained(dir, trust_remote_code=True)`` works without emtbench.
EmtFlagshipConfig.register_for_auto_class("AutoConfig")
