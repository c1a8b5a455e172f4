"""The flagship MLLM's transformers classes, with tiny random weights (no downloads, CI-sized)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import read_results, run_emtbench
from PIL import Image
from torch.nn import functional


@pytest.fixture(scope="session")
def tiny_flagship_dir(tmp_path_factory):
    from emtbench.testing import build_tiny_flagship

    return build_tiny_flagship(tmp_path_factory.mktemp("models") / "tiny-flagship")


@pytest.fixture(scope="session")
def loaded(tiny_flagship_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(tiny_flagship_dir), AutoProcessor.from_pretrained(
        tiny_flagship_dir
    )


def _images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (8 + 4 * i, 8 + 4 * i), dtype=np.uint8)) for i in range(count)
    ]


def _prompt(processor, question: str = "What is the number?") -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def test_import_emtbench_registers_the_auto_classes(tiny_flagship_dir):
    from transformers import AutoConfig

    import emtbench  # noqa: F401

    config = AutoConfig.from_pretrained(tiny_flagship_dir)
    assert type(config).__name__ == "EmtFlagshipConfig"
    assert config.image_token_id == config.image_token_index is not None
    saved = json.loads((tiny_flagship_dir / "config.json").read_text())
    assert saved["model_type"] == "emt_flagship"
    assert saved["architectures"] == ["EmtFlagshipForConditionalGeneration"]


def test_auto_classes_load_the_saved_model_and_processor(loaded):
    model, processor = loaded
    assert type(model).__name__ == "EmtFlagshipForConditionalGeneration"
    assert type(processor).__name__ == "EmtFlagshipProcessor"
    assert processor.tokenizer.padding_side == "left"
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied


def test_save_load_round_trip_keeps_every_tensor(loaded, tmp_path):
    from transformers import AutoModelForImageTextToText

    model, _ = loaded
    model.save_pretrained(tmp_path)
    again = AutoModelForImageTextToText.from_pretrained(tmp_path)
    before, after = model.state_dict(), again.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any("running_var" in k for k in after)  # batch-norm statistics of the vision tower travel too


def test_bf16_load_keeps_the_vision_tower_fp32_and_saves_the_lm_dtype(tiny_flagship_dir, tmp_path):
    """bf16 rounding of the tower's batch-norm statistics shifts its features; only the LM goes bf16."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_flagship_dir, dtype=torch.bfloat16)
    tower = model.model.vision_tower
    assert {t.dtype for t in [*tower.parameters(), *tower.buffers()] if t.is_floating_point()} == {
        torch.float32
    }
    assert model.model.multi_modal_projector.linear_1.weight.dtype == torch.bfloat16
    assert model.dtype == torch.bfloat16
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    again = AutoModelForImageTextToText.from_pretrained(tmp_path, dtype="auto")
    assert again.dtype == torch.bfloat16 and again.model.vision_tower.dtype == torch.float32
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = again.model.vision_tower(pixels.to(torch.bfloat16))
        reference = AutoModelForImageTextToText.from_pretrained(tiny_flagship_dir).model.vision_tower(pixels)
    assert features.dtype == torch.float32
    assert torch.allclose(features, reference, atol=0.02)  # only the bf16 rounding of the input pixels


def test_processor_expands_image_tokens_for_nested_and_flat_images(loaded):
    model, processor = loaded
    images = _images(2)
    prompts = [_prompt(processor), _prompt(processor, "What is the object in the image?")]
    nested = processor(
        images=[[images[0]], [images[1]]], text=prompts, padding="longest", return_tensors="pt"
    )
    flat = processor(images=images, text=prompts, padding="longest", return_tensors="pt")
    assert torch.equal(nested["input_ids"], flat["input_ids"])
    per_row = (nested["input_ids"] == model.config.image_token_id).sum(dim=1)
    assert per_row.tolist() == [model.config.image_seq_length] * 2
    assert nested["pixel_values"].shape == (2, 3, 32, 32)
    assert nested["attention_mask"][0, 0] == 0  # left padding: the shorter prompt is padded in front


def test_image_changes_the_logits_and_generate_runs(loaded):
    model, processor = loaded
    images = _images(2)
    text = [_prompt(processor)] * 2
    batch = processor(images=images, text=text, padding="longest", return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert not torch.allclose(logits[0, -1], logits[1, -1])  # different images, same text
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] == batch["input_ids"].shape[1] + 4
    assert torch.equal(out[:, : batch["input_ids"].shape[1]], batch["input_ids"])


def test_wrong_number_of_images_is_a_clear_error(loaded):
    model, processor = loaded
    batch = processor(images=_images(1), text=[_prompt(processor)], return_tensors="pt")
    embeds = model.get_image_features(torch.cat([batch["pixel_values"]] * 2))
    with pytest.raises(ValueError, match="<image> tokens"):
        model(input_ids=batch["input_ids"], image_embeds=embeds)


def test_training_mode_keeps_the_vision_batchnorm_statistics(loaded):
    model, processor = loaded
    batch = processor(
        images=_images(2), text=[_prompt(processor)] * 2, padding="longest", return_tensors="pt"
    )
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.train()
    try:
        model(**batch)
    finally:
        model.eval()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_parts_mapping_finds_llava_style_modules(loaded):
    from emtbench.models.parts import model_parts

    model, _ = loaded
    parts = model_parts(model)
    assert parts.vision_tower is model.model.vision_tower
    assert parts.projectors == [model.model.multi_modal_projector]
    assert parts.lm_head is model.lm_head


@pytest.mark.slow
def test_alignment_lowers_the_loss_and_trains_only_the_projector(loaded):
    from emtbench.methods.build_base import AlignmentData, AlignmentOptions, align_projector

    model, processor = loaded
    model = type(model).from_pretrained(model.name_or_path)
    grid = model.config.image_seq_length
    features = torch.randn(4, grid, model.config.vision_config.head_channels)
    data = AlignmentData(
        features, [0, 1, 2, 3], ["digits", "digits", "fashion_mnist", "fashion_mnist"], [0, 1, 2, 3]
    )
    frozen_before = model.model.language_model.embed_tokens.weight.clone()
    projector_before = model.model.multi_modal_projector.linear_1.weight.clone()
    options = AlignmentOptions(steps=12, batch_size=4, learning_rate=3e-3, short_question_share=0.0)
    losses = align_projector(model, processor, data, options)
    assert losses[-1] < losses[0]
    assert torch.equal(model.model.language_model.embed_tokens.weight, frozen_before)
    assert not torch.equal(model.model.multi_modal_projector.linear_1.weight, projector_before)


@pytest.mark.slow
def test_hf_multimodal_eval_loads_it_by_path(tiny_flagship_dir, tmp_path):
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_flagship_dir}",
        "--device", "cpu", "--tasks", "emt_digits", "--limit", "4", "--batch_size", "2",
        "--apply_chat_template", "--output_path", str(tmp_path), "--log_samples",
        "--gen_kwargs", "max_gen_toks=8",
    )  # fmt: skip
    assert code == 0
    results = read_results(tmp_path)
    assert "emt_digits" in results["results"]
    assert results["config"]["model_args"]["pretrained"] == str(tiny_flagship_dir)
    samples = list(tmp_path.rglob("samples_emt_digits_*.jsonl"))
    assert len(samples) == 1 and len(samples[0].read_text().splitlines()) == 4


@pytest.mark.slow
def test_lora_finetune_steps_run_on_the_flagship_unchanged(tiny_flagship_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    output = tmp_path / "lora"
    code = run_emtbench(
        "finetune", "--model", str(tiny_flagship_dir), "--method", "lora", "--data", "emt:digits",
        "--max-steps", "2", "--warmup-ratio", "0", "--batch-size", "2", "--output", str(output),
    )  # fmt: skip
    assert code == 0
    tuned = AutoModelForImageTextToText.from_pretrained(output)
    base = AutoModelForImageTextToText.from_pretrained(tiny_flagship_dir)
    assert type(tuned).__name__ == "EmtFlagshipForConditionalGeneration"
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert any("language_model" in k for k in changed)  # LoRA merged into the LLM
    assert not any("vision_tower" in k for k in changed)  # frozen tower, batch-norm statistics included


@pytest.mark.slow
def test_warm_start_makes_each_cell_emit_its_class_vector_and_leaves_no_dead_units(loaded):
    """The probe is fit per grid cell, as the projector runs; unused hidden units still get gradients."""
    from emtbench.methods.build_base import (
        AlignmentData,
        _class_name_embeddings,
        global_classes,
        warm_start_projector,
    )

    model, processor = loaded
    model = type(model).from_pretrained(model.name_or_path)
    classes = global_classes()
    channels, cells = model.config.vision_config.head_channels, model.config.image_seq_length
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(len(classes), channels, generator=generator).relu() * 3
    labels = [i % len(classes) for i in range(200)]
    features = prototypes[labels][:, None, :] + 0.3 * torch.rand(
        len(labels), cells, channels, generator=generator
    )
    data = AlignmentData(features, labels, [classes[c][0] for c in labels], [classes[c][1] for c in labels])

    accuracy = warm_start_projector(model, processor.tokenizer, data, seed=0)

    assert accuracy > 0.9
    projector = model.model.multi_modal_projector
    class_units = projector.act(projector.linear_1(features))[..., : len(classes)]  # (images, cells, classes)
    assert (class_units.argmax(dim=-1) == torch.tensor(labels)[:, None]).float().mean() > 0.9
    winners = class_units.max(dim=-1).values
    assert 0.5 < winners.median() < 2.0  # sharpened: a typical winner's unit is ~1 ...
    assert (class_units.sum(dim=-1) - winners).median() < winners.median()  # ... and dominates the rest
    names = _class_name_embeddings(model, processor.tokenizer)
    gelu_of_one = functional.gelu(torch.tensor(1.0))
    assert torch.allclose(projector.linear_2.weight[:, : len(classes)].T * gelu_of_one, names, atol=1e-5)
    projector(features).square().mean().backward()
    assert projector.linear_2.weight.grad[:, len(classes) :].abs().sum() > 0


@pytest.mark.slow
def test_class_tokens_learn_to_make_the_frozen_lm_answer_each_class(loaded):
    """Textual-inversion stage: one vector per class, trained through the frozen LM, lowers the answer loss."""
    from emtbench.methods.build_base import AlignmentOptions, global_classes, learn_class_tokens

    model, processor = loaded
    model = type(model).from_pretrained(model.name_or_path)
    frozen_before = model.model.language_model.embed_tokens.weight.clone()
    options = AlignmentOptions(class_token_steps=16, class_token_learning_rate=3e-2, short_question_share=0.0)
    vectors, shared, losses = learn_class_tokens(model, processor, options)
    assert vectors.shape == (len(global_classes()), model.config.text_config.hidden_size)
    assert shared.shape == (model.config.text_config.hidden_size,)
    # steps alternate datasets: compare each dataset's first and last loss
    assert losses[-2] < losses[0] and losses[-1] < losses[1]
    assert torch.equal(model.model.language_model.embed_tokens.weight, frozen_before)


def _question_first_batch(processor, count: int, *, pad_one: bool = False):
    question = "What is the object in the image? Please only answer a single object in cat, dog, bird, fish."
    texts = []
    for index in range(count):
        asked = question + (" Be brief." if pad_one and index == 0 else "")
        messages = [{"role": "user", "content": [{"type": "text", "text": asked}, {"type": "image"}]}]
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
    return processor(images=_images(count), text=texts, padding="longest", return_tensors="pt")


def test_a_frozen_head_projects_only_the_kept_positions_as_one_matrix_product(tiny_flagship_dir):
    """With the weights frozen (a PEFT adapter loaded for evaluation), the last-token slice reaches the LM
    head contiguous, so it is one (rows x hidden) @ (hidden x vocabulary) product, not a batched one over
    the vocabulary matrix expanded per row (pytorch/pytorch#186148: 1000x slower on CPU at batch 128)."""
    from torch.profiler import profile
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_flagship_dir).eval().requires_grad_(False)
    processor = AutoProcessor.from_pretrained(tiny_flagship_dir)
    batch = processor(
        images=_images(3), text=[_prompt(processor)] * 3, padding="longest", return_tensors="pt"
    )
    vocabulary = model.lm_head.weight.shape[0]
    with torch.inference_mode():
        full = model(**batch).logits
        with profile(record_shapes=True) as trace:
            last = model(**batch, logits_to_keep=1).logits
    batched_head = [
        event.input_shapes
        for event in trace.events()
        if event.name == "aten::bmm" and any(vocabulary in shape for shape in event.input_shapes)
    ]
    assert batched_head == []
    assert last.shape == (3, 1, vocabulary)
    torch.testing.assert_close(last, full[:, -1:])


def test_generate_computes_the_shared_prompt_prefix_once_and_gives_the_same_tokens(loaded, monkeypatch):
    model, processor = loaded
    batch = _question_first_batch(processor, 3)
    cache = model.shared_prefix_cache(None, dict(batch))
    first_image = int((batch["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    assert cache is not None and cache.get_seq_length() == first_image >= model.MIN_SHARED_PREFIX
    shared = model.generate(**batch, max_new_tokens=6, do_sample=False)
    monkeypatch.setattr(type(model), "MIN_SHARED_PREFIX", 10**9)
    assert model.shared_prefix_cache(None, dict(batch)) is None
    plain = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(shared, plain)


def test_no_shared_prefix_across_padding_beams_or_a_given_cache(loaded):
    model, processor = loaded
    padded = _question_first_batch(processor, 3, pad_one=True)
    assert padded["attention_mask"][1, 0] == 0  # the shorter prompts are padded in front
    assert model.shared_prefix_cache(None, dict(padded)) is None
    batch = _question_first_batch(processor, 3)
    assert model.shared_prefix_cache(None, {**batch, "num_beams": 2}) is None
    assert model.shared_prefix_cache(None, {**batch, "use_cache": False}) is None
    assert model.shared_prefix_cache(None, {**batch, "cache_implementation": "static"}) is None
    one = _question_first_batch(processor, 1)
    assert model.shared_prefix_cache(None, dict(one)) is None


def test_inference_reuses_the_vision_features_of_the_same_pixels_and_weights(tiny_flagship_dir):
    from transformers import AutoModelForImageTextToText

    from emtbench.models.flagship import modeling_emt_flagship as modeling

    model = AutoModelForImageTextToText.from_pretrained(tiny_flagship_dir).eval()
    inner = model.model
    pixels = torch.rand(2, 3, 32, 32)
    modeling.VISION_FEATURE_CACHE.clear()
    with torch.no_grad():
        first = inner.pool_vision_features(pixels)
        assert len(modeling.VISION_FEATURE_CACHE) == 1
        calls = []
        hook = inner.vision_tower.register_forward_hook(lambda *args: calls.append(1))
        again = inner.pool_vision_features(pixels)
        assert calls == [] and torch.equal(first, again)  # the tower did not run
        inner.pool_vision_features(pixels + 0.5)
        assert calls == [1] and len(modeling.VISION_FEATURE_CACHE) == 2  # other pixels: computed
        next(inner.vision_tower.parameters()).add_(0.1)
        changed = inner.pool_vision_features(pixels)
        assert calls == [1, 1] and not torch.equal(changed, first)  # other weights: computed
    inner.pool_vision_features(pixels)  # gradients enabled: never cached
    model.train()
    with torch.no_grad():
        inner.pool_vision_features(pixels)  # training: never cached
    assert calls == [1, 1, 1, 1]
    hook.remove()


def test_vision_tower_runs_a_batch_in_cache_sized_passes_with_the_same_features(tiny_flagship_dir):
    from transformers import AutoModelForImageTextToText

    tower = AutoModelForImageTextToText.from_pretrained(tiny_flagship_dir).eval().model.vision_tower
    assert tower.IMAGES_PER_PASS == 4
    sizes = []
    encode = tower.encoder.forward_features
    tower.encoder.forward_features = lambda pixels: sizes.append(pixels.shape[0]) or encode(pixels)
    pixels = torch.rand(9, 3, 32, 32)
    with torch.no_grad():
        passes = tower(pixels)
        assert sizes == [3, 3, 3]  # ceil(9 / 4) passes, as even as possible
        sizes.clear()
        tower(pixels[:5])
        assert sizes == [3, 2]  # never a lone image (oneDNN takes another kernel for batch 1)
        sizes.clear()
        tower.IMAGES_PER_PASS = 100
        whole = tower(pixels)
    assert sizes == [9]
    assert passes.shape == whole.shape == (9, tower.config.head_channels, 4, 4)
    torch.testing.assert_close(passes, whole, rtol=1e-6, atol=1e-6)


def test_eager_gqa_attention_gives_eager_results_for_grouped_heads(tiny_flagship_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_flagship_dir)
    models = {
        name: AutoModelForImageTextToText.from_pretrained(tiny_flagship_dir, attn_implementation=name).eval()
        for name in ("eager", "emt_eager_gqa")
    }
    text = models["eager"].config.get_text_config()
    assert text.num_attention_heads // text.num_key_value_heads == 2  # the tiny LM groups its heads
    assert models["emt_eager_gqa"].config.get_text_config()._attn_implementation == "emt_eager_gqa"
    batch = _question_first_batch(processor, 3, pad_one=True)  # left padding: the mask matters
    with torch.no_grad():
        outputs = {name: model(**batch, output_attentions=True) for name, model in models.items()}
        tokens = {
            name: model.generate(**batch, max_new_tokens=5, do_sample=False) for name, model in models.items()
        }
    torch.testing.assert_close(outputs["emt_eager_gqa"].logits, outputs["eager"].logits, rtol=1e-5, atol=1e-5)
    length = batch["input_ids"].shape[1]
    for grouped, eager in zip(outputs["emt_eager_gqa"].attentions, outputs["eager"].attentions, strict=True):
        assert grouped.shape == eager.shape == (3, text.num_attention_heads, length, length)
        torch.testing.assert_close(grouped, eager, rtol=1e-5, atol=1e-6)
    assert torch.equal(tokens["emt_eager_gqa"], tokens["eager"])


def test_eager_gqa_attention_takes_per_head_masks_and_plain_multi_head_attention():
    from transformers.models.llama.modeling_llama import eager_attention_forward

    from emtbench.models.flagship.grouped_attention import eager_gqa_attention_forward

    generator = torch.Generator().manual_seed(0)
    for heads, kv_heads, mask_heads in ((6, 2, 6), (6, 2, 1), (4, 4, 4)):
        module = torch.nn.Module().eval()
        module.num_key_value_groups = heads // kv_heads
        query = torch.randn(2, heads, 5, 8, generator=generator)
        key, value = (torch.randn(2, kv_heads, 7, 8, generator=generator) for _ in range(2))
        mask = torch.where(torch.rand(2, mask_heads, 5, 7, generator=generator) < 0.3, -1e9, 0.0)
        grouped = eager_gqa_attention_forward(module, query, key, value, mask, scaling=0.3)
        eager = eager_attention_forward(module, query, key, value, mask, scaling=0.3)
        for ours, reference in zip(grouped, eager, strict=True):
            assert ours.shape == reference.shape
            torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
