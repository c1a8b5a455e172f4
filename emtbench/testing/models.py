"""Tiny random models for tests and benchmarks.

They are built from real ``transformers`` configs, saved with ``save_pretrained`` and loaded back
through the same Auto-class path a user's checkpoint takes, so tests exercise the real code paths
without a model hub. Nothing here is used at evaluation time.
"""

from __future__ import annotations

from pathlib import Path

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}</s>"
    "{% elif message['role'] == 'system' %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %} "
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
"""LLaVA-1.5's conversation format (``USER: <image>\\n... ASSISTANT:``) as a chat template."""

_TOKENIZER_CORPUS = [
    "What is the object in the image? Please only answer a single object in",
    "What is the number in the image? Please only answer a single number in 0, 1, 2, 3, 4, 5, 6, 7, 8, 9.",
    "The object is a(n) airplane. The number is 7. automobile bird cat deer dog frog horse ship truck",
    "T-shirt/top Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag Ankle boot",
    "USER: ASSISTANT: yes no zero one two three four five six seven eight nine",
    "the quick brown fox jumps over the lazy dog; a picture of a fish in a tank.",
]


def build_tiny_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer trained on a few EMT sentences, with LLaVA's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS * 4, trainer=trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
    )


def build_tiny_llava(
    output_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
) -> Path:
    """Save a randomly initialised LLaVA (tiny CLIP vision tower + tiny Llama) with its processor."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer()
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir


def build_tiny_clip(
    output_dir: str | Path, *, seed: int = 0, hidden_size: int = 32, image_size: int = 32
) -> Path:
    """A tiny random ``CLIPModel`` with tokenizer and image processor, saved for loading by path."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer()
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=8,
    )
    config = CLIPConfig(
        text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=hidden_size
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(output_dir)
    return output_dir


INSTRUCTBLIP_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
"""InstructBLIP's plain prompt: the text only (the processor itself puts the query tokens first)."""


def build_tiny_instructblip(output_dir: str | Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Save a randomly initialised InstructBLIP (tiny ViT + Q-Former + Llama) with its processor."""
    import torch
    from transformers import (
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
        LlamaConfig,
        PreTrainedTokenizerFast,
    )
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    output_dir = Path(output_dir)
    tiny = build_tiny_tokenizer()
    # InstructBLIP's processor registers its own "<image>" AddedToken; a tokenizer-level image_token
    # string would break it, so the tokenizer is rebuilt without that attribute (same vocabulary).
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tiny.backend_tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", padding_side="left",
    )  # fmt: skip
    num_query_tokens = 4
    vision_config = InstructBlipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=8,
    )  # fmt: skip
    qformer_config = InstructBlipQFormerConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    config = InstructBlipConfig(
        vision_config=vision_config.to_dict(),
        qformer_config=qformer_config.to_dict(),
        text_config=text_config.to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        qformer_tokenizer=PreTrainedTokenizerFast(tokenizer_object=tiny.backend_tokenizer, pad_token="<pad>"),
        num_query_tokens=num_query_tokens,
    )
    processor.chat_template = INSTRUCTBLIP_CHAT_TEMPLATE  # its __init__ drops a chat_template argument
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir


def build_tiny_flagship(
    output_dir: str | Path, *, seed: int = 0, image_size: int = 32, image_grid: int = 2
) -> Path:
    """A tiny random flagship (2-stage EfficientNet-Lite, 2-layer Llama), saved with its processor, for tests."""
    import torch
    from transformers import LlamaConfig

    from emtbench.models.flagship import register
    from emtbench.models.flagship.assemble import add_image_token, make_processor, set_generation_defaults
    from emtbench.models.flagship.configuration_emt_flagship import EfficientNetLiteConfig, EmtFlagshipConfig
    from emtbench.models.flagship.modeling_emt_flagship import EmtFlagshipForConditionalGeneration

    register()
    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer()
    image_token_id = add_image_token(tokenizer)
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    vision_config = EfficientNetLiteConfig(
        stages=[[3, 1, 1, 8, 1], [3, 2, 4, 16, 1], [3, 2, 4, 16, 1]],
        stem_channels=8,
        head_channels=32,
        image_size=image_size,
    )
    config = EmtFlagshipConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        image_grid=image_grid,
    )
    torch.manual_seed(seed)
    model = EmtFlagshipForConditionalGeneration(config).eval()
    set_generation_defaults(model, tokenizer)
    processor = make_processor(tokenizer, image_size, config.image_seq_length)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
