"""Trainer habits: --report-to, TrainingArguments passed through, the log history kept, one --no-progress."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os

import pytest
from conftest import LM_EVAL_RUN, run_emtbench

from emtbench.core.errors import EmtbenchError
from emtbench.core.progress import progress_bar, progress_enabled, progress_silenced
from emtbench.methods.finetune import TrainSettings
from emtbench.methods.finetune.trainer_args import (
    report_to_list,
    trainer_args_argv,
    trainer_args_from_argv,
)

HAS_TENSORBOARD = any(importlib.util.find_spec(p) for p in ("tensorboard", "tensorboardX"))


def test_training_arguments_fields_pass_through_typed():
    values = trainer_args_from_argv(
        ["--max_grad_norm", "0.5", "--optim", "adafactor", "--save-strategy", "epoch", "--adam_beta2=0.95"]
    )
    assert values["max_grad_norm"] == 0.5 and isinstance(values["max_grad_norm"], float)
    assert values["adam_beta2"] == 0.95
    assert (values["optim"], values["save_strategy"]) == ("adafactor", "epoch")
    assert type(values["optim"]) is str  # transformers' enums as plain values, for the run record
    assert trainer_args_from_argv([]) == {}


def test_a_field_emtbench_has_a_flag_for_names_that_flag():
    with pytest.raises(EmtbenchError, match="use --lr instead"):
        trainer_args_from_argv(["--learning_rate", "1e-3"])
    with pytest.raises(EmtbenchError, match="use --batch-size instead"):
        trainer_args_from_argv(["--per-device-train-batch-size", "4"])
    with pytest.raises(EmtbenchError, match="fixed by emtbench"):
        trainer_args_from_argv(["--remove_unused_columns", "true"])


def test_an_unknown_flag_is_refused_with_the_closest_names():
    with pytest.raises(EmtbenchError, match="did you mean --max_grad_norm") as error:
        trainer_args_from_argv(["--max_grad_nrom", "1"])
    assert "neither an emtbench flag nor a TrainingArguments field" in str(error.value)
    with pytest.raises(EmtbenchError, match="did you mean --max-steps"):
        trainer_args_from_argv(["--max-step", "3"], own_flags=["--max-steps", "--lr"])
    with pytest.raises(EmtbenchError, match="bad TrainingArguments value"):
        trainer_args_from_argv(["--max_grad_norm", "lots"])
    with pytest.raises(EmtbenchError, match="unrecognized argument"):
        trainer_args_from_argv(["--max_grad_norm", "1", "stray"])


def test_the_python_api_checks_trainer_args_too():
    settings = TrainSettings.of("full", max_steps=1, trainer_args={"max_grad_norm": 0.25})
    assert settings.training.trainer_args == {"max_grad_norm": 0.25}
    assert settings.record()["trainer_args"] == {"max_grad_norm": 0.25}
    assert settings.to_argv()[-2:] == ["--max_grad_norm", "0.25"]
    default = TrainSettings.of("full", max_steps=1).record()
    assert "trainer_args" not in default and "report_to" not in default  # records of earlier runs still match
    with pytest.raises(EmtbenchError, match="use --seed instead"):
        TrainSettings.of("full", trainer_args={"seed": 3})
    with pytest.raises(EmtbenchError, match="did you mean --max_grad_norm"):
        TrainSettings.of("full", trainer_args={"max_grad_nrm": 1.0})


def test_printed_flags_parse_back_to_the_same_values():
    values = {
        "max_grad_norm": 0.5,
        "logging_first_step": True,
        "save_only_model": False,
        "optim": "adafactor",
    }
    again = trainer_args_from_argv(trainer_args_argv(values))
    assert again["max_grad_norm"] == 0.5 and again["logging_first_step"] is True
    assert again["save_only_model"] is False
    assert again["optim"] == "adafactor"


def test_report_to_is_checked_before_anything_loads(monkeypatch):
    assert report_to_list("none") == ["none"] == report_to_list(None)
    with pytest.raises(EmtbenchError, match="not one of none, tensorboard, wandb"):
        report_to_list("tensorbord")
    with pytest.raises(EmtbenchError, match="cannot be combined"):
        report_to_list("none,tensorboard")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(EmtbenchError, match="pip install wandb"):
        TrainSettings.of("full", report_to="wandb")


def test_training_arguments_carry_report_to_pass_through_and_progress(tmp_path):
    from emtbench.methods.finetune.trainer import training_arguments

    report = "tensorboard" if HAS_TENSORBOARD else "none"
    settings = TrainSettings.of(
        "full", max_steps=2, report_to=report, trainer_args={"max_grad_norm": 0.25, "save_total_limit": 3}
    )
    args = training_arguments(settings, tmp_path / "ckpt")
    assert args.max_grad_norm == 0.25 and args.save_total_limit == 3  # a fixed default overridden on request
    assert list(args.report_to) == [report] or (report == "none" and not args.report_to)
    assert args.disable_tqdm is False
    with progress_silenced():
        assert training_arguments(settings, tmp_path / "ckpt").disable_tqdm is True


def test_finetune_command_refuses_a_typo_before_loading_anything(tmp_path, capsys):
    code = run_emtbench(
        "finetune", "--model", str(tmp_path / "no-model"), "--method", "full", "--data", "emt:digits",
        "--output", str(tmp_path / "out"), "--max-stps", "3",
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--max-stps" in err and "did you mean --max-steps" in err
    assert not (tmp_path / "out").exists()


def _leaf_parsers(parser: argparse.ArgumentParser):
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not nested:
        yield parser
    for action in nested:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaf_parsers(child)


def test_every_command_takes_no_progress():
    from emtbench.cli import build_parser

    commands = [p for p in _leaf_parsers(build_parser()) if p.prog != "emtbench"]
    assert len(commands) >= 10, [p.prog for p in commands]
    for parser in commands:
        assert "--no-progress" in parser._option_string_actions, parser.prog


def test_silencing_hides_bars_and_is_undone(capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    list(progress_bar(range(3), desc="visible-bar"))
    assert "visible-bar" in capsys.readouterr().err
    with progress_silenced():
        assert not progress_enabled() and os.environ["TQDM_DISABLE"] == "1"
        list(progress_bar(range(3), desc="hidden-bar"))
    assert "hidden-bar" not in capsys.readouterr().err
    assert progress_enabled() and "TQDM_DISABLE" not in os.environ
    list(progress_bar(range(3), desc="short", min_items=10))
    assert "short" not in capsys.readouterr().err


def test_merge_bars_follow_no_progress(capsys):
    """dare / ties / task-arithmetic go through fusion.base.progress: a bar, unless silenced."""
    from emtbench.methods.fusion.base import MergeContext, progress

    list(progress(["a", "b"], "dare", MergeContext(model=None)))
    assert "dare" in capsys.readouterr().err
    with progress_silenced():
        list(progress(["a", "b"], "ties", MergeContext(model=None)))
    assert "ties" not in capsys.readouterr().err


def test_no_progress_on_a_real_command(tmp_path, capsys, monkeypatch):
    """`emtbench judge-agreement` shows its judges bar and the llm judge's answers bar, and neither with
    --no-progress (the llm judge's bar is made by the judge, far from the command's flags)."""
    from openai_server import OpenAIServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-progress-test")
    samples = [str(p) for p in sorted(LM_EVAL_RUN.glob("samples_*.jsonl"))]
    out = tmp_path / "d.jsonl"
    with OpenAIServer(default="yes") as server:
        metadata = json.dumps({"judge_base_url": server.base_url, "judge_model": "m", "judge_backoff": 0})
        argv = ["judge-agreement", *samples, "--judges", "rule,llm", "--metadata", metadata]
        assert run_emtbench(*argv, "--disagreements", str(out)) == 0
        err = capsys.readouterr().err
        assert "judges:" in err and "llm judge:" in err
        assert run_emtbench(*argv, "--disagreements", str(out), "--no-progress") == 0
        err = capsys.readouterr().err
        assert "judges:" not in err and "llm judge:" not in err


@pytest.mark.slow
def test_finetune_keeps_trainer_state_logs_and_passes_arguments(tiny_llava_dir, tmp_path):
    out = tmp_path / "ft"
    report = "tensorboard" if HAS_TENSORBOARD else "none"
    code = run_emtbench(
        "finetune", "--model", str(tiny_llava_dir), "--method", "full", "--data", "emt:digits",
        "--max-steps", "3", "--logging-steps", "1", "--batch-size", "4", "--limit", "12",
        "--report-to", report, "--max_grad_norm", "0.5", "--logging_first_step", "--no-progress",
        "--output", str(out),
    )  # fmt: skip
    assert code == 0
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in losses] == [1, 2, 3]
    assert state["global_step"] == 3
    record = json.loads((out / "emtbench_run.json").read_text())
    assert record["settings"]["trainer_args"] == {"max_grad_norm": 0.5, "logging_first_step": True}
    assert record["settings"].get("report_to", "none") == report
    if HAS_TENSORBOARD:
        assert list((out / "runs").rglob("events.out.tfevents.*"))
