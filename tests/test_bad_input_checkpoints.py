"""Bad checkpoints and configs: fusion inputs whose weights do not fit their config, broken config.json,
Prismatic run configs with mistyped fields and checkpoints whose tensors do not fit the backbones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from bad_input import cli, expect_refusal
from safetensors.torch import load_file, save_file

AREA_CHECKPOINTS = "checkpoints (fusion, convert)"
AREA_CONFIGS = "configs (config.json, Prismatic)"


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    from emtbench.testing import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("bad-input-ckpt") / "tiny-llava")


def _edited_copy(source: Path, target: Path, edit) -> Path:
    shutil.copytree(source, target)
    state = load_file(target / "model.safetensors")
    edit(state)
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    return target


def _q_proj(state: dict) -> str:
    return next(key for key in state if key.endswith("layers.0.self_attn.q_proj.weight"))


WEIGHT_EDITS = {
    "a tensor missing": lambda s: s.pop(_q_proj(s)),
    "a tensor of another shape": lambda s: s.update({_q_proj(s): torch.zeros(s[_q_proj(s)].shape[0], 3)}),
    "NaN weights": lambda s: s.update({_q_proj(s): torch.full_like(s[_q_proj(s)], float("nan"))}),
    "infinite weights": lambda s: s.update({_q_proj(s): torch.full_like(s[_q_proj(s)], float("inf"))}),
}


@pytest.mark.parametrize("case", WEIGHT_EDITS)
def test_merge_refuses_finetuned_weights_that_do_not_fit_the_config(tmp_path, tiny_llava, case):
    """The issue: fusion inputs whose config matches but whose weights do not."""
    finetuned = _edited_copy(tiny_llava, tmp_path / "ft", WEIGHT_EDITS[case])
    out = tmp_path / "out"
    expect_refusal(
        AREA_CHECKPOINTS,
        f"merge --finetuned with {case}",
        cli(
            "merge",
            "--method",
            "task-arithmetic",
            "--pretrained",
            str(tiny_llava),
            "--finetuned",
            str(finetuned),
            "--output",
            str(out),
            "--no-progress",
        ),
        match="--finetuned",
    )
    assert not out.exists()


def test_merge_refuses_a_truncated_safetensors_file(tmp_path, tiny_llava):
    finetuned = tmp_path / "ft"
    shutil.copytree(tiny_llava, finetuned)
    data = (finetuned / "model.safetensors").read_bytes()
    (finetuned / "model.safetensors").write_bytes(data[: len(data) // 2])
    expect_refusal(
        AREA_CHECKPOINTS,
        "merge --finetuned with a truncated model.safetensors",
        cli(
            "merge",
            "--method",
            "task-arithmetic",
            "--pretrained",
            str(tiny_llava),
            "--finetuned",
            str(finetuned),
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
        ),
    )


CONFIG_TEXT = {
    "non-UTF-8": b'{"model_type": "llava", "note": "caf\xe9"}',
    "truncated": b'{"model_type": "lla',
    "duplicate model_type": b'{"model_type": "llava", "model_type": "clip"}',
    "NaN": b'{"model_type": "llava", "initializer_range": NaN}',
    "a list": b"[]",
    "model_type a number": b'{"model_type": 5}',
    "architectures a string": b'{"model_type": "llava", "architectures": "LlavaForConditionalGeneration"}',
    "unknown model_type": b'{"model_type": "no-such-model"}',
}


@pytest.mark.parametrize("case", CONFIG_TEXT)
def test_merge_refuses_broken_config_json(tmp_path, tiny_llava, case):
    finetuned = tmp_path / "ft"
    shutil.copytree(tiny_llava, finetuned)
    (finetuned / "config.json").write_bytes(CONFIG_TEXT[case])
    expect_refusal(
        AREA_CONFIGS,
        f"merge: config.json {case}",
        cli(
            "merge",
            "--method",
            "task-arithmetic",
            "--pretrained",
            str(tiny_llava),
            "--finetuned",
            str(finetuned),
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
        ),
        match="config",
    )


@pytest.mark.parametrize("case", ["non-UTF-8", "truncated", "duplicate model_type", "a list"])
def test_eval_refuses_a_broken_config_json_before_loading(tmp_path, tiny_llava, case):
    model = tmp_path / "model"
    shutil.copytree(tiny_llava, model)
    (model / "config.json").write_bytes(CONFIG_TEXT[case])
    expect_refusal(
        AREA_CONFIGS,
        f"eval: config.json {case}",
        cli(
            "eval",
            "--model",
            "hf-multimodal",
            "--model_args",
            f"pretrained={model}",
            "--tasks",
            "emt_digits",
            "--device",
            "cpu",
            "--output_path",
            str(tmp_path / "out"),
        ),
        match="config.json",
    )


# --- Prismatic run directories ------------------------------------------------------------------


@pytest.fixture(scope="module")
def prismatic_run(tmp_path_factory) -> dict:
    from test_prismatic import _write_run

    return _write_run(tmp_path_factory.mktemp("bad-input-prismatic"), arch="gelu-mlp")


def _run_copy(made: dict, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    return run


def _convert(made: dict, run: Path, out: Path):
    return cli("convert", "prismatic", str(run), "--output", str(out), "--vision-tower", str(made["vision"]),
               "--llm", str(made["llm"]))  # fmt: skip


MODEL_FIELDS = {
    "vision_backbone_id a list": {"vision_backbone_id": ["clip-vit-l"]},
    "llm_backbone_id a number": {"llm_backbone_id": 7},
    "arch_specifier null": {"arch_specifier": None},
    "llm_max_length a string": {"llm_max_length": "long"},
    "llm_max_length 2048.7": {"llm_max_length": 2048.7},
    "llm_max_length -1": {"llm_max_length": -1},
    "llm_max_length true": {"llm_max_length": True},
    "image_resize_strategy an object": {"image_resize_strategy": {"kind": "letterbox"}},
    "model_id a list": {"model_id": ["x"]},
}


@pytest.mark.parametrize("case", MODEL_FIELDS)
def test_convert_prismatic_refuses_mistyped_config_fields(tmp_path, prismatic_run, case):
    run = _run_copy(prismatic_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["model"].update(MODEL_FIELDS[case])
    (run / "config.json").write_text(json.dumps(config))
    expect_refusal(
        AREA_CONFIGS,
        f"prismatic config: {case}",
        _convert(prismatic_run, run, tmp_path / "out"),
        match="config.json",
    )


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("model a list", b'{"model": []}'),
        ("not UTF-8", b'{"model": {"model_id": "caf\xe9"}}'),
        ("NaN", b'{"model": {"llm_max_length": NaN}}'),
        ("truncated", b'{"model": {"vision_'),
    ],
)
def test_convert_prismatic_refuses_broken_config_json(tmp_path, prismatic_run, case, text):
    run = _run_copy(prismatic_run, tmp_path)
    (run / "config.json").write_bytes(text)
    expect_refusal(
        AREA_CONFIGS,
        f"prismatic config.json: {case}",
        _convert(prismatic_run, run, tmp_path / "out"),
        match="config.json",
    )


def _edit_checkpoint(run: Path, edit) -> None:
    path = run / "checkpoints" / "latest-checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    edit(payload["model"])
    torch.save(payload, path)


CHECKPOINT_EDITS = {
    "projector of another width": lambda m: m["projector"].update({"projector.0.weight": torch.zeros(48, 5)}),
    "an LLM layer of another shape": lambda m: m["llm_backbone"].update(
        {"llm.model.layers.0.mlp.up_proj.weight": torch.zeros(3, 3)}
    ),
    "a number instead of a tensor": lambda m: m["projector"].update({"projector.0.bias": 3}),
    "projector a list": lambda m: m.update(projector=[1, 2]),
}


@pytest.mark.parametrize("case", CHECKPOINT_EDITS)
def test_convert_prismatic_refuses_tensors_that_do_not_fit(tmp_path, prismatic_run, case):
    run = _run_copy(prismatic_run, tmp_path)
    _edit_checkpoint(run, CHECKPOINT_EDITS[case])
    out = tmp_path / "out"
    expect_refusal(
        AREA_CHECKPOINTS,
        f"prismatic checkpoint: {case}",
        _convert(prismatic_run, run, out),
        match="checkpoint",
    )
    assert not out.exists()


@pytest.mark.parametrize("case", ["a tensor missing", "NaN weights"])
def test_finetune_refuses_a_base_model_whose_weights_do_not_fit(tmp_path, tiny_llava, case):
    """transformers would initialise the missing tensor at random and train on from there."""
    model = _edited_copy(tiny_llava, tmp_path / "base", WEIGHT_EDITS[case])
    out = tmp_path / "out"
    expect_refusal(
        AREA_CHECKPOINTS,
        f"finetune --model with {case}",
        cli(
            "finetune",
            "--model",
            str(model),
            "--method",
            "linear",
            "--data",
            "emt:digits",
            "--limit",
            "4",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--output",
            str(out),
        ),
        match="--model",
        nothing_wasted=lambda: not (tmp_path / ".out.checkpoints").exists(),
    )


@pytest.mark.parametrize("case", ["non-UTF-8", "duplicate model_type"])
def test_finetune_refuses_a_broken_config_json(tmp_path, tiny_llava, case):
    model = tmp_path / "base"
    shutil.copytree(tiny_llava, model)
    (model / "config.json").write_bytes(CONFIG_TEXT[case])
    expect_refusal(
        AREA_CONFIGS,
        f"finetune: config.json {case}",
        cli(
            "finetune",
            "--model",
            str(model),
            "--method",
            "linear",
            "--data",
            "emt:digits",
            "--limit",
            "4",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--output",
            str(tmp_path / "out"),
        ),
        match="config.json",
    )
