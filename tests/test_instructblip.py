"""A tiny random InstructBLIP through `emtbench eval` (hf-multimodal) and one linear fine-tuning step.

InstructBLIP's processor puts its query tokens in front of the text itself, so the EMT prompt's
``<image>`` placeholder must become plain text: ``image_string= `` (a space) in ``--model_args``.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import read_results, run_emtbench
from safetensors.torch import load_file

from emtbench.models.parts import model_parts


@pytest.fixture(scope="module")
def tiny_instructblip_dir(tmp_path_factory):
    from emtbench.testing import build_tiny_instructblip

    return build_tiny_instructblip(tmp_path_factory.mktemp("models") / "tiny-instructblip")


def test_parts_map_qformer_and_projection_as_projector(tiny_instructblip_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_instructblip_dir)
    parts = model_parts(model)
    assert parts.projectors == [model.qformer, model.language_projection]
    assert parts.vision_tower is model.vision_model
    assert parts.lm_head is model.get_output_embeddings()
    assert parts.language_model is model.language_model.model


@pytest.mark.slow
def test_eval_runs_emt_task(tiny_instructblip_dir, tmp_path):
    code = run_emtbench(
        "eval", "--model", "hf-multimodal",
        "--model_args", f"image_string= ,pretrained={tiny_instructblip_dir}",
        "--device", "cpu", "--tasks", "emt_digits", "--limit", "4", "--batch_size", "2",
        "--output_path", str(tmp_path), "--log_samples",
    )  # fmt: skip
    assert code == 0
    metrics = read_results(tmp_path)["results"]["emt_digits"]
    rates = [metrics[f"{name},none"] for name in ("acc", "wrong", "intrinsic_hallucination",
                                                   "extrinsic_hallucination", "empty", "unparseable")]  # fmt: skip
    assert all(0.0 <= rate <= 1.0 for rate in rates)
    samples = next(tmp_path.rglob("samples_emt_digits_*.jsonl")).read_text().splitlines()
    assert len(samples) == 4
    assert all(json.loads(line)["resps"][0][0] for line in samples)  # the model generated text


@pytest.mark.slow
def test_linear_finetune_step_trains_only_the_projector(tiny_instructblip_dir, tmp_path):
    output = tmp_path / "ft"
    code = run_emtbench(
        "finetune", "--model", str(tiny_instructblip_dir), "--method", "linear", "--data", "emt:digits",
        "--limit", "4", "--max-steps", "1", "--batch-size", "2", "--lr", "0.01", "--warmup-ratio", "0",
        "--output", str(output),
    )  # fmt: skip
    assert code == 0
    before = load_file(tiny_instructblip_dir / "model.safetensors")
    after = load_file(output / "model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed, "one step of linear fine-tuning changed nothing"
    assert all(name.startswith(("qformer.", "language_projection.")) for name in changed), changed
    assert any(name.startswith("language_projection.") for name in changed)
    assert json.loads((output / "emtbench_run.json").read_text())["method"] == "linear"
