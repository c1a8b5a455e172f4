"""``emtbench finetune --snapshot-steps`` (the forgetting curve from one run), ``--train-prompt``, and the
fine-tuning-stage learning-rate defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_emtbench

from emtbench.core.errors import EmtbenchError
from emtbench.methods.finetune import FinetuneOptions, TrainSettings, finetune, get_method
from emtbench.methods.finetune.data import QUESTIONS, load_conversations


def test_fine_tuning_stage_learning_rates_are_the_defaults_with_their_sources(capsys):
    assert get_method("linear").default_learning_rate == 2e-5
    assert get_method("full").default_learning_rate == 2e-5
    assert get_method("lora").default_learning_rate == 2e-4
    assert get_method("msgm").default_learning_rate == 2e-4
    assert TrainSettings.of("linear").training.learning_rate == 2e-5
    with pytest.raises(SystemExit):
        run_emtbench("finetune", "--help")
    text = capsys.readouterr().out
    assert "lr 2e-05 (CL-LLaVA App. A, fine-tuning stage" in text
    assert "LLaVA-1.5's released LoRA" in text


def test_train_prompt_eval_is_the_evaluation_question_with_its_label_list():
    from emtbench.datasets.emt import get_dataset

    short = load_conversations("emt:digits", limit=3, seed=0)
    evaluation = load_conversations("emt:digits", limit=3, seed=0, prompt="eval")
    assert set(short["question"]) == {QUESTIONS["number"]}
    assert set(evaluation["question"]) == {get_dataset("digits").prompt}
    assert "0, 1, 2" in evaluation["question"][0] or "0" in evaluation["question"][0]
    assert evaluation["answer"] == short["answer"]  # same images, same answers: only the question differs


def test_train_prompt_eval_is_refused_for_json_data_that_brings_its_own_questions(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(
        json.dumps([{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}])
    )
    with pytest.raises(EmtbenchError, match="applies to emt: data"):
        load_conversations(str(path), prompt="eval")
    with pytest.raises(EmtbenchError, match="unknown training prompt"):
        FinetuneOptions(model="m", data="emt:digits", output=tmp_path / "o", train_prompt="long")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["4"], "outside the run"),
        (["0"], "outside the run"),
        (["x"], "not a step number"),
        (["1", "1"], "repeat"),
    ],
)
def test_snapshot_steps_outside_the_run_are_refused_before_anything_loads(tmp_path, steps, message):
    settings = TrainSettings.of("linear", max_steps=4)
    with pytest.raises(EmtbenchError, match=message):
        FinetuneOptions(
            model="m", data="emt:digits", output=tmp_path / "o", settings=settings, snapshot_steps=steps
        )


def test_snapshot_flags_parse_and_print_back_to_the_same_options(tmp_path):
    from emtbench.cli import build_parser
    from emtbench.cli.finetune import options_from_args

    options = FinetuneOptions(
        model="m", data="emt:digits", output=tmp_path / "run", settings=TrainSettings.of("lora", max_steps=8),
        snapshot_steps=["4", 2], train_prompt="eval",
    )  # fmt: skip
    assert options.snapshot_steps == [2, 4]
    assert options.snapshot_output(2) == tmp_path / "run-step2"
    argv = options.to_argv()
    assert "--snapshot-steps" in argv and "--train-prompt" in argv
    assert options_from_args(build_parser().parse_args(["finetune", *argv])) == options


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.mark.slow
def test_a_snapshot_is_the_model_after_that_many_steps_of_the_same_run(tmp_path, tiny_llava_dir):
    """Step 2 of a 3-step run equals a run stopped after 2 steps (constant rate, same seed and data)."""
    common = {"max_steps": 3, "batch_size": 2, "learning_rate": 1e-2, "warmup_ratio": 0.0,
              "lr_scheduler": "constant", "seed": 3}  # fmt: skip
    long = finetune(
        FinetuneOptions(
            model=str(tiny_llava_dir), data="emt:digits", output=tmp_path / "long", limit=8,
            settings=TrainSettings.of("linear", **common), snapshot_steps=[1, 2], train_prompt="eval",
        )
    )  # fmt: skip
    short = finetune(
        FinetuneOptions(
            model=str(tiny_llava_dir), data="emt:digits", output=tmp_path / "short", limit=8,
            settings=TrainSettings.of("linear", **{**common, "max_steps": 2}), train_prompt="eval",
        )
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long", "long-step1", "long-step2", "short"]
    record = json.loads((tmp_path / "long-step2" / "emtbench_run.json").read_text())
    assert record["snapshot"] == {"step": 2, "of": str(tmp_path / "long")}
    assert record["training"] == {"global_step": 2} and record["data"]["train_prompt"] == "eval"
    assert long.record["data"]["train_prompt"] == "eval"
    assert 0 < record["parameters"]["changed_fraction"] < 1
    step1, step2, end = (_weights(tmp_path / name) for name in ("long-step1", "long-step2", "long"))
    stopped = _weights(short.output)
    projector = [name for name in end if "multi_modal_projector" in name]
    assert projector
    for name in projector:
        torch.testing.assert_close(step2[name], stopped[name])
    assert any(not torch.equal(step1[n], step2[n]) for n in projector)
    assert any(not torch.equal(step2[n], end[n]) for n in projector)


@pytest.mark.slow
def test_lora_snapshots_are_merged_model_folders_that_load(tmp_path, tiny_llava_dir, monkeypatch):
    from transformers import AutoModelForImageTextToText

    import emtbench.methods.finetune.saving as saving
    import emtbench.methods.finetune.trainer as trainer

    loads = []

    def counted(model_path):
        loads.append(model_path)
        return original(model_path)

    original = saving.load_reference
    monkeypatch.setattr(saving, "load_reference", counted)
    monkeypatch.setattr(trainer, "load_reference", counted)
    finetune(
        FinetuneOptions(
            model=str(tiny_llava_dir), data="emt:digits", output=tmp_path / "lora", limit=4,
            settings=TrainSettings.of("lora", max_steps=2, batch_size=2), snapshot_steps=[1],
        )
    )  # fmt: skip
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "lora-step1")
    assert not any("lora" in name for name in model.state_dict())
    assert not list(tmp_path.glob(".lora*"))  # checkpoints (and the snapshots' raw saves) removed
    assert loads == [str(tiny_llava_dir)]  # one base model for the final rebuild and every snapshot's
