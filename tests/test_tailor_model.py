"""Model Tailor through a real (tiny) LLaVA: the layer-by-layer driver, `emtbench tailor`, and eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import read_results, run_emtbench
from fusion_helpers import target_loss

from emtbench.core.errors import EmtbenchError


@pytest.fixture(scope="module")
def tailored_dir(tiny_llava_dir, tiny_finetuned_llava_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("tailor") / "tailored"
    code = run_emtbench(
        "tailor", "--pretrained", str(tiny_llava_dir), "--finetuned", str(tiny_finetuned_llava_dir),
        "--calib-data", "emt:digits", "--calib-samples", "32", "--calib-batch-size", "8",
        "--patch", "0.1", "--output", str(output), "--no-progress",
    )  # fmt: skip
    assert code == 0
    return output


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(model_dir).state_dict()


@pytest.mark.slow
def test_tailor_then_eval_lowers_target_loss(
    tiny_llava_dir, tiny_finetuned_llava_dir, tailored_dir, tmp_path
):
    losses = {
        "pre-trained": target_loss(tiny_llava_dir, "emt:digits"),
        "fine-tuned": target_loss(tiny_finetuned_llava_dir, "emt:digits"),
        "tailored": target_loss(tailored_dir, "emt:digits"),
    }
    print("held-out emt:digits answer loss:", {k: round(v, 4) for k, v in losses.items()})
    assert losses["fine-tuned"] < losses["pre-trained"]
    assert losses["tailored"] < losses["pre-trained"]

    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tailored_dir}", "--device", "cpu",
        "--tasks", "emt_digits", "--limit", "4", "--batch_size", "4", "--apply_chat_template",
        "--output_path", str(tmp_path / "eval"),
    )  # fmt: skip
    assert code == 0
    assert "emt_digits" in read_results(tmp_path / "eval")["results"]


@pytest.mark.slow
def test_run_record_and_untouched_parts(tiny_llava_dir, tiny_finetuned_llava_dir, tailored_dir):
    run = json.loads((tailored_dir / "emtbench_run.json").read_text())
    assert run["method"] == "model-tailor"
    assert run["settings"]["patch"] == 0.1 and run["settings"]["score"] == "released"
    assert 0.0 < run["parameters"]["changed_fraction"] < 0.2
    decoder = {k: v for k, v in run["layers"].items() if ".layers." in k and "vision" not in k}
    assert len(decoder) == 14 and all(v["status"] == "tailored" for v in decoder.values())
    assert all(0.09 <= v["changed_share"] <= 0.1 + 1e-3 for v in decoder.values())
    assert run["layers"]["model.multi_modal_projector.linear_1"]["status"] == "tailored"
    assert (tailored_dir / "README.md").is_file()

    pre, fine, tailored = _weights(tiny_llava_dir), _weights(tiny_finetuned_llava_dir), _weights(tailored_dir)
    for name in tailored:
        if "vision_tower" in name or "embed_tokens" in name or "lm_head" in name or "norm" in name:
            assert torch.equal(tailored[name], pre[name]), name
    name = "model.language_model.layers.1.mlp.down_proj.weight"
    assert not torch.equal(fine[name], pre[name])
    kept = tailored[name] != pre[name]
    assert 0.09 < kept.float().mean().item() <= 0.1 + 1e-3
    # the kept weights are the compensated fine-tuned ones, not copies
    assert not torch.equal(tailored[name][kept], fine[name][kept])
    assert "model.language_model.layers.1.input_layernorm.weight" in run["fine_tuned_but_left_pretrained"]


@pytest.mark.slow
def test_driver_calibrates_through_already_tailored_layers(tiny_llava_dir, tiny_finetuned_llava_dir):
    """Re-deriving the last layers' Hessians from the *final* model reproduces their fused weights."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from emtbench.methods.finetune.data import ConversationCollator, load_conversations
    from emtbench.methods.fusion.driver import tailor_model
    from emtbench.methods.fusion.tailor import HessianAccumulator, TailorConfig, tailor_layer

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir).eval()
    pre = {k: v.clone() for k, v in model.state_dict().items()}
    fine = AutoModelForImageTextToText.from_pretrained(tiny_finetuned_llava_dir).state_dict()
    collator = ConversationCollator(AutoProcessor.from_pretrained(tiny_llava_dir))
    rows = load_conversations("emt:digits", limit=10, seed=3)
    batches = [collator([rows[i] for i in range(s, min(s + 4, 10))]) for s in (0, 4, 8)]  # padded batches
    config = TailorConfig(patch=0.2, blocksize=32)
    reports = tailor_model(model, [fine], [batches], config, progress=False)
    assert {r.status for r in reports} == {"tailored"}

    names = ["model.language_model.layers.1.self_attn.o_proj", "model.language_model.layers.1.mlp.down_proj"]
    accumulators = {name: HessianAccumulator(model.get_submodule(name).in_features) for name in names}
    mask = [None]
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: accumulators[name].add(args[0][mask[0]])
        )
        for name in names
    ]
    with torch.no_grad():
        for batch in batches:
            mask[0] = batch["attention_mask"].bool()
            model(**{k: v for k, v in batch.items() if k != "labels"})
    for hook in hooks:
        hook.remove()
    for name in names:
        expected = tailor_layer(
            pre[f"{name}.weight"], fine[f"{name}.weight"], accumulators[name].hessian(), config
        )
        torch.testing.assert_close(
            model.get_submodule(name).weight.detach(), expected.weight, rtol=1e-4, atol=1e-5
        )


@pytest.mark.slow
def test_multi_task_tailor_takes_the_mask_union(
    tiny_llava_dir, tiny_finetuned_llava_dir, tailored_dir, tmp_path
):
    output = tmp_path / "multi"
    code = run_emtbench(
        "tailor", "--pretrained", str(tiny_llava_dir),
        "--finetuned", str(tiny_finetuned_llava_dir), "--calib-data", "emt:digits",
        "--finetuned", str(tiny_finetuned_llava_dir), "--calib-data", "emt:fashion_mnist",
        "--calib-samples", "16", "--output", str(output), "--no-progress",
    )  # fmt: skip
    assert code == 0
    run = json.loads((output / "emtbench_run.json").read_text())
    single = json.loads((tailored_dir / "emtbench_run.json").read_text())
    assert run["method"] == "model-tailor-multitask"
    assert run["data"]["calibration"] == ["emt:digits", "emt:fashion_mnist"]
    name = "model.language_model.layers.1.mlp.up_proj"
    # two calibration sets choose different patches; their union is larger than one patch
    assert run["layers"][name]["changed_share"] > single["layers"][name]["changed_share"]
    assert run["parameters"]["changed_fraction"] > single["parameters"]["changed_fraction"]


def _fails(capsys, *argv: str) -> str:
    assert run_emtbench(*argv) == 2
    return capsys.readouterr().err


def test_bad_patch_fails_before_any_work(tiny_llava_dir, tmp_path, capsys):
    output = tmp_path / "out"
    err = _fails(
        capsys, "tailor", "--pretrained", str(tiny_llava_dir), "--finetuned", str(tiny_llava_dir),
        "--calib-data", "emt:digits", "--patch", "1.5", "--output", str(output),
    )  # fmt: skip
    assert "--patch" in err and "[0, 1]" in err
    assert not output.exists()


def test_different_shapes_are_rejected(tiny_llava_dir, tmp_path, capsys):
    from emtbench.testing import build_tiny_llava

    other = build_tiny_llava(tmp_path / "wider", hidden_size=32)
    err = _fails(
        capsys, "tailor", "--pretrained", str(tiny_llava_dir), "--finetuned", str(other),
        "--calib-data", "emt:digits", "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert "shape" in err and "--finetuned" in err
    assert not (tmp_path / "out").exists()


def test_different_architectures_are_rejected(tiny_llava_dir, tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        )
    ).save_pretrained(tmp_path / "llama")
    err = _fails(
        capsys, "merge", "--method", "dare", "--pretrained", str(tiny_llava_dir),
        "--finetuned", str(tmp_path / "llama"), "--drop-rate", "0.5", "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert "architecture LlamaForCausalLM differs" in err
    assert not (tmp_path / "out").exists()


def test_mismatched_calibration_count_is_rejected(tiny_llava_dir, tmp_path, capsys):
    err = _fails(
        capsys, "tailor", "--pretrained", str(tiny_llava_dir), "--finetuned", str(tiny_llava_dir),
        "--finetuned", str(tiny_llava_dir), "--finetuned", str(tiny_llava_dir),
        "--calib-data", "emt:digits", "--calib-data", "emt:fashion_mnist", "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert "2 --calib-data for 3 --finetuned" in err


def test_calibration_without_target_tokens_is_rejected(tiny_llava_dir):
    from transformers import AutoProcessor

    from emtbench.methods.fusion.checkpoints import calibration_batches, check_target_tokens

    processor = AutoProcessor.from_pretrained(tiny_llava_dir)
    batches = calibration_batches("emt:digits", processor, samples=4, batch_size=2)
    check_target_tokens(batches, "emt:digits")  # real answers: fine
    for batch in batches:
        batch["labels"][:] = -100  # e.g. every answer cut off
    with pytest.raises(EmtbenchError, match="no target") as error:
        check_target_tokens(batches, "emt:digits")
    assert error.value.where == "--calib-data emt:digits"


def test_instructblip_qformer_projector_and_llm_are_tailored(tmp_path):
    """A multi-module projector (Q-Former + language projection) goes through the same driver."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from emtbench.methods.fusion.checkpoints import calibration_batches
    from emtbench.methods.fusion.driver import tailor_model
    from emtbench.methods.fusion.tailor import TailorConfig
    from emtbench.testing import build_tiny_instructblip

    model_dir = build_tiny_instructblip(tmp_path / "instructblip")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    finetuned = AutoModelForImageTextToText.from_pretrained(model_dir).state_dict()
    generator = torch.Generator().manual_seed(0)
    for name, tensor in finetuned.items():
        if "vision_model" not in name and tensor.is_floating_point():
            tensor += 0.02 * torch.randn(tensor.shape, generator=generator)
    batches = calibration_batches(
        "emt:digits", AutoProcessor.from_pretrained(model_dir), samples=8, batch_size=4
    )
    reports = tailor_model(model, [finetuned], [batches], TailorConfig(), progress=False)
    names = [report.name for report in reports]
    assert any(name.startswith("qformer.") for name in names)
    assert "language_projection" in names
    assert any(name.startswith("language_model.model.layers.") for name in names)
    assert all(report.status == "tailored" and 0.09 < report.changed_share <= 0.101 for report in reports)


def test_tailor_reads_checkpoints_lazily_with_the_result_of_loading_them_whole(
    tiny_llava_dir, tiny_finetuned_llava_dir
):
    """`emtbench tailor` holds only the model being tailored; reading tensors on demand changes nothing."""
    from emtbench.methods.fusion.checkpoints import (
        LazyCheckpoint,
        calibration_batches,
        load_model,
        load_processor,
        open_checkpoint,
    )
    from emtbench.methods.fusion.driver import tailor_model
    from emtbench.methods.fusion.tailor import TailorConfig

    model = load_model(str(tiny_llava_dir))
    pretrained_state = open_checkpoint(str(tiny_llava_dir), model)  # as emtbench.merge/tailor read them
    finetuned = [open_checkpoint(str(tiny_finetuned_llava_dir), model)]
    assert isinstance(pretrained_state, LazyCheckpoint) and isinstance(finetuned[0], LazyCheckpoint)
    batches = calibration_batches("emt:digits", load_processor(str(tiny_llava_dir)), samples=16, batch_size=8)
    tailor_model(model, finetuned, [batches], TailorConfig(), progress=False)
    eager = load_model(str(tiny_llava_dir))
    tailor_model(
        eager,
        [load_model(str(tiny_finetuned_llava_dir)).state_dict()],
        [batches],
        TailorConfig(),
        progress=False,
    )
    for name, tensor in eager.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    for name, tensor in load_model(str(tiny_llava_dir)).state_dict().items():
        assert torch.equal(pretrained_state[name], tensor), name  # the reference is the file, not the model
