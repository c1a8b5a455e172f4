"""The offline flagship MLLM as a transformers model (LLaVA-1.5's recipe on small, real, offline parts).

Module names follow ``LlavaForConditionalGeneration`` (``model.vision_tower``,
``model.multi_modal_projector.linear_1/linear_2``, ``model.language_model``, ``lm_head``) so
fine-tuning target lists and part mappings written for LLaVA carry over unchanged.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_emt_flagship import EfficientNetLiteConfig, EmtFlagshipConfig
from .efficientnet_lite import EfficientNetLite, StageSpec
from .grouped_attention import NAME as GROUPED_EAGER_ATTENTION  # noqa: F401  (the import registers it)

CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
"""What this transformers calls the key/value cache, in model outputs and ``forward`` arguments.

transformers 5.24 renamed ``past_key_values`` to ``cache`` (outputs and forward keywords; the old
keyword is still accepted with a warning until 5.40). These files also travel with checkpoints as
remote code (``trust_remote_code=True``), so they follow the name of whichever transformers loads them.
"""


@dataclass
class EmtFlagshipOutput(CausalLMOutputWithPast):
    """transformers' causal-LM output (whatever its cache field is named) plus the projected image tokens."""

    image_hidden_states: torch.Tensor | None = None


def _cache_argument(cache, past_key_values) -> dict:
    """The cache as the keyword this transformers' language models take (either name accepted from callers)."""
    if cache is not None and past_key_values is not None:
        raise ValueError("pass the key/value cache once, as `cache` or as `past_key_values`")
    value = cache if cache is not None else past_key_values
    return {CACHE_NAME: value}


VISION_FEATURE_CACHE: OrderedDict[str, torch.Tensor] = OrderedDict()
"""Pooled vision features of recent inference batches (least recently used dropped past the limit)."""
VISION_CACHE_BYTES = 256 * 2**20


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()).cast("B")


def _vision_cache_key(model: nn.Module, pixel_values: torch.Tensor) -> str | None:
    """SHA-256 of the tower's weights and buffers, the pooling grid and the pixels; ``None`` where the
    cache does not apply (training, gradients wanted, or tensors off the CPU: hashing would cost more)."""
    if model.training or torch.is_grad_enabled() or pixel_values.device.type != "cpu":
        return None
    state = model.vision_tower.state_dict()
    if any(t.device.type != "cpu" for t in state.values()):
        return None
    digest = hashlib.sha256(
        f"{model.config.image_grid}|{tuple(pixel_values.shape)}|{pixel_values.dtype}".encode()
    )
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(_tensor_bytes(tensor))
    digest.update(_tensor_bytes(pixel_values))
    return digest.hexdigest()


def _remember_vision_features(key: str, pooled: torch.Tensor) -> None:
    VISION_FEATURE_CACHE[key] = pooled.detach().clone()
    while VISION_FEATURE_CACHE and sum(t.nbytes for t in VISION_FEATURE_CACHE.values()) > VISION_CACHE_BYTES:
        VISION_FEATURE_CACHE.popitem(last=False)


class EfficientNetLiteVisionModel(PreTrainedModel):
    """EfficientNet-Lite feature extractor (no classifier) as a transformers model, so it saves with the MLLM."""

    config_class = EfficientNetLiteConfig
    config: EfficientNetLiteConfig
    base_model_prefix = "vision_tower"
    main_input_name = "pixel_values"

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        self.encoder = EfficientNetLite(
            stages=tuple(StageSpec(*s) for s in config.stages),
            stem_channels=config.stem_channels,
            head_channels=config.head_channels,
            num_classes=0,
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Random init only matters for tiny test models; real runs load the ImageNet weights."""
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def train(self, mode: bool = True) -> EfficientNetLiteVisionModel:
        """Batch norm stays in eval mode: small fine-tuning batches must not overwrite ImageNet statistics."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    IMAGES_PER_PASS = 4
    """Images the tower runs at once on CPU: its activation maps are then cache-sized.

    At 224 px the widest map is 96 x 112 x 112 fp32 (4.8 MB) per image: a whole batch of 64 streams
    300 MB buffers through memory-bound depthwise convolutions and ReLU6 at every layer. Measured on
    2 threads (digits test images, batch 64): 13.5 ms per image in one pass, 10.3 in passes of 16,
    9.2 of 8, 8.7 of 4, 11.3 of 2; features bit-identical to one pass for every pass of 2 or more
    images (a single image takes another oneDNN kernel, ~1e-5 apart), hence passes of at least 2.
    """

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, head_channels, H/32, W/32), computed in fp32 whatever the weights' dtype.

        Why fp32: in bf16 the pooled features drift 8-16% (relative L2 on digits and Fashion-MNIST
        test images; 6-8% from bf16-rounded weights and statistics alone) from the fp32 features the
        projector is aligned on, which costs answers; the tower is ~0.8 GFLOP per image, a small share
        of an eval step. On CPU the batch runs in passes of about :attr:`IMAGES_PER_PASS` images.
        """
        with torch.autocast(device_type=pixel_values.device.type, enabled=False):
            pixels = pixel_values.float()
            passes = -(-pixels.shape[0] // self.IMAGES_PER_PASS) if pixels.device.type == "cpu" else 1
            if passes <= 1:
                return self.encoder.forward_features(pixels)
            # tensor_split: sizes differ by at most one, so no pass holds a lone image (for B >= 2)
            return torch.cat([self.encoder.forward_features(part) for part in pixels.tensor_split(passes)])


class EmtFlagshipProjector(nn.Module):
    """LLaVA-1.5's two-layer GELU MLP from vision channels to the LM's embedding width."""

    def __init__(self, config: EmtFlagshipConfig):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.linear_1 = nn.Linear(config.vision_config.head_channels, hidden)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


class EmtFlagshipPreTrainedModel(PreTrainedModel):
    config_class = EmtFlagshipConfig
    config: EmtFlagshipConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _skip_keys_device_placement: ClassVar[list[str]] = [CACHE_NAME]
    _keep_in_fp32_modules_strict: ClassVar[list[str]] = ["vision_tower"]
    """Loading with ``dtype=bfloat16`` keeps the tower fp32: its folded batch-norm statistics lose 6-8% of
    feature accuracy when rounded to bf16 (see ``EfficientNetLiteVisionModel.forward``); it is 3.4M params."""

    @property
    def dtype(self) -> torch.dtype:
        """The language model's dtype: what inputs follow and what ``save_pretrained`` writes as
        ``config.dtype`` (so ``dtype="auto"`` loads the LM as stored), not the fp32 vision tower's."""
        return self.get_input_embeddings().weight.dtype

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        else:
            super()._init_weights(module)


class EmtFlagshipModel(EmtFlagshipPreTrainedModel):
    """Vision tower + projector + decoder, without the LM head."""

    def __init__(self, config: EmtFlagshipConfig):
        super().__init__(config)
        self.vision_tower = EfficientNetLiteVisionModel(config.vision_config)
        self.multi_modal_projector = EmtFlagshipProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def pool_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, grid*grid, channels): the frozen part, cacheable across training steps.

        At inference on CPU the result is kept in :data:`VISION_FEATURE_CACHE`, keyed by the tower's
        weights and the batch's pixels: evaluating several fine-tunes of one base (whose vision tower
        every EMT method keeps frozen) on the same images computes the tower once (1.5 s per 64 images).
        """
        key = _vision_cache_key(self, pixel_values)
        if key is not None and key in VISION_FEATURE_CACHE:
            VISION_FEATURE_CACHE.move_to_end(key)
            return VISION_FEATURE_CACHE[key].clone()
        features = self.vision_tower(pixel_values)
        grid = self.config.image_grid
        pooled = functional.adaptive_avg_pool2d(features, grid).flatten(2).transpose(1, 2)
        if key is not None:
            _remember_vision_features(key, pooled)
        return pooled

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, grid*grid, hidden): one LM embedding per image token."""
        pooled = self.pool_vision_features(pixel_values)
        return self.multi_modal_projector(pooled.to(self.multi_modal_projector.linear_1.weight.dtype))

    def merge_image_embeddings(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, image_embeds: torch.Tensor
    ):
        """Write the image embeddings, in order, over the ``<image>`` placeholder positions."""
        mask = input_ids == self.config.image_token_id
        if int(mask.sum()) != image_embeds.shape[0] * image_embeds.shape[1]:
            raise ValueError(
                f"{int(mask.sum())} <image> tokens in the text but {image_embeds.shape[0]} image(s) x "
                f"{image_embeds.shape[1]} tokens each; build inputs with the model's processor"
            )
        image_embeds = image_embeds.reshape(-1, inputs_embeds.shape[-1]).to(inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1), image_embeds)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        past_key_values=None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if image_embeds is None and pixel_values is not None:
            image_embeds = self.get_image_features(pixel_values)
        if image_embeds is not None and input_ids is not None:
            inputs_embeds = self.merge_image_embeddings(input_ids, inputs_embeds, image_embeds)
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **_cache_argument(cache, past_key_values),
            **kwargs,
        )
        outputs["image_hidden_states"] = image_embeds
        return outputs


class EmtFlagshipForConditionalGeneration(EmtFlagshipPreTrainedModel, GenerationMixin):
    """The flagship MLLM with its LM head; ``generate`` feeds ``pixel_values`` only at prefill (GenerationMixin)."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "lm_head.weight": "model.language_model.embed_tokens.weight"
    }

    def __init__(self, config: EmtFlagshipConfig):
        super().__init__(config)
        self.model = EmtFlagshipModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values)

    def prepare_inputs_for_generation(self, *args, **kwargs):
        """Images enter at prefill only: a decode step (no ``<image>`` token left) gets no pixels.

        transformers 5.24's GenerationMixin drops ``pixel_values`` after the first step by itself
        (``input_modalities``); earlier 5.x releases pass them at every step. Deciding from the
        tokens is right on both, because the placeholders exist only in the prompt.
        """
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        ids = inputs.get("input_ids")
        decoding = ids is not None and not bool((ids == self.config.image_token_id).any())
        if decoding and inputs.get("pixel_values") is not None:
            inputs["pixel_values"] = None
        return inputs

    def generate(self, inputs: torch.Tensor | None = None, **kwargs):
        """``GenerationMixin.generate``, with the prompt prefix that every row shares computed once.

        An EMT batch asks one question of many images: the chat template, the question and its label
        list come before ``<image>`` and are the same in every row, so prefill would repeat ~50 of the
        ~66 tokens per row. Their keys and values are computed for one row and repeated over the batch
        (:meth:`shared_prefix_cache`); generate then runs only the rest. No library does this for
        ``transformers`` generate (vLLM's prefix caching is the same idea at serving scale).
        """
        cache = self.shared_prefix_cache(inputs, kwargs)
        if cache is not None:
            kwargs[CACHE_NAME] = cache
        return super().generate(inputs, **kwargs)

    MIN_SHARED_PREFIX = 8
    """Shorter shared prefixes are not worth the extra forward call."""

    def shared_prefix_cache(self, inputs: torch.Tensor | None, kwargs: dict):
        """A key/value cache of the rows' common prefix, repeated per row, or ``None`` when not applicable.

        Applies to plain greedy or sampled decoding of a batch of token ids without a cache of its own;
        the prefix stops before the first ``<image>`` token and before any padding.
        """
        ids = kwargs.get("input_ids", inputs)
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] < 2:
            return None
        config = kwargs.get("generation_config") or self.generation_config
        beams = kwargs.get("num_beams", getattr(config, "num_beams", 1)) or 1
        returns = kwargs.get("num_return_sequences", getattr(config, "num_return_sequences", 1)) or 1
        blocked = ("inputs_embeds", "assistant_model", "prompt_lookup_num_tokens", "cache", "past_key_values",
                   "cache_implementation")  # fmt: skip
        if beams != 1 or returns != 1 or kwargs.get("use_cache") is False:
            return None
        if any(kwargs.get(name) is not None for name in blocked):
            return None
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        shared = (ids == ids[:1]).all(0) & mask.bool().all(0) & (ids[0] != self.config.image_token_id)
        length = int(shared.long().cumprod(0).sum())
        length = min(length, ids.shape[1] - 1)  # generate needs at least one new token to run
        if length < self.MIN_SHARED_PREFIX:
            return None
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config.get_text_config())
        with torch.no_grad():
            self(input_ids=ids[:1, :length], attention_mask=mask[:1, :length], use_cache=True,
                 logits_to_keep=1, **{CACHE_NAME: cache})  # fmt: skip
        cache.batch_repeat_interleave(ids.shape[0])
        return cache

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_embeds: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values=None,
        **kwargs,
    ) -> EmtFlagshipOutput:
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            image_embeds=image_embeds,
            **_cache_argument(cache, past_key_values),
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            # Contiguous: torch.matmul does not see that this slice of a longer sequence is viewable as
            # (rows, hidden), so when the head's weight does not require grad (a PEFT adapter loaded for
            # evaluation, a frozen model) F.linear runs one product per row against the whole vocabulary
            # matrix: 12 s instead of 10 ms for 128 rows on CPU (pytorch/pytorch#186148). The copy is
            # rows x hidden values; with a weight that requires grad torch makes the same copy itself.
            hidden = hidden[:, -logits_to_keep:].contiguous() if logits_to_keep else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size
            )
        return EmtFlagshipOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.get("image_hidden_states"),
            **{CACHE_NAME: outputs.get(CACHE_NAME)},
        )


# Hub remote code: ``save_pretrained`` adds these to ``config.json``'s ``auto_map`` and copies this file
# with its relative imports (configuration_emt_flagship, efficientnet_lite) into the checkpoint.
EmtFlagshipForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
EmtFlagshipModel.register_for_auto_class("AutoModel")
