"""Bad input for fine-tuning: training data files, option values, and `kill -9` in the middle of saves.

Everything wrong with the input must be a named error before training starts (no checkpoint folder
appears); a run killed at any point of a save resumes with ``--resume`` from the last complete
checkpoint and leaves no hidden half-written folder behind.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input import cli, expect_handled, expect_refusal
from PIL import Image

AREA_DATA = "training data (LLaVA JSON)"
AREA_OPTIONS = "finetune options"
AREA_KILL = "checkpoints (kill -9, resume)"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    from emtbench.testing import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("bad-input-train") / "tiny-llava")


def _finetune(model: Path, out: Path, *extra: str, data: str = "emt:digits") -> list[str]:
    return ["finetune", "--model", str(model), "--method", "linear", "--data", data, "--limit", "8",
            "--max-steps", "2", "--batch-size", "2", "--output", str(out), *extra]  # fmt: skip


def _no_training(out: Path):
    return lambda: not (out.parent / f".{out.name}.checkpoints").exists()


# --- LLaVA-format training files ----------------------------------------------------------


def _png(size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _record(image: str | None = "a.png", human="<image>\nWhat is it?", gpt="A cat.") -> dict:
    record = {"conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]}
    if image is not None:
        record["image"] = image
    return record


LLAVA_FILES = {
    "NaN in a record": lambda: json.dumps([_record()]).replace('"A cat."', "NaN"),
    "duplicate conversations key": lambda: json.dumps([_record()]).replace(
        '{"conversations"', '{"conversations": [], "conversations"', 1
    ),
    "truncated": lambda: json.dumps([_record()] * 3)[:-10],
    "an object, not a list": lambda: json.dumps(_record()),
    "a gpt answer that is an object": lambda: json.dumps([_record(gpt={"text": "A cat."})]),
    "a human turn that is a number": lambda: json.dumps([_record(human=7)]),
    "image path a list": lambda: json.dumps([_record(image=["a.png"])]),
    "image that is text": lambda: json.dumps([_record(image="not-an-image.png")]),
    "image that is a decompression bomb": lambda: json.dumps([_record(image="bomb.png")]),
    "image that is truncated": lambda: json.dumps([_record(image="truncated.png")]),
    "image outside the image root": lambda: json.dumps([_record(image="../../../../etc/hostname")]),
    "empty list": lambda: "[]",
}


@pytest.mark.parametrize("case", LLAVA_FILES)
def test_llava_json_problems_are_named_before_training(tmp_path, tiny_llava, case):
    data = tmp_path / "train.json"
    (tmp_path / "a.png").write_bytes(_png())
    (tmp_path / "not-an-image.png").write_text("hello")
    (tmp_path / "truncated.png").write_bytes(_png((64, 64))[:50])
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    (tmp_path / "bomb.png").write_bytes(buffer.getvalue())
    data.write_text(LLAVA_FILES[case]())
    out = tmp_path / "out"
    expect_refusal(
        AREA_DATA, case, cli(*_finetune(tiny_llava, out, data=str(data))), nothing_wasted=_no_training(out)
    )


def test_llava_json_that_is_not_utf8(tmp_path, tiny_llava):
    data = tmp_path / "train.json"
    (tmp_path / "a.png").write_bytes(_png())
    data.write_bytes(json.dumps([_record(gpt="A caf_")]).encode().replace(b"caf_", b"caf\xe9"))
    out = tmp_path / "out"
    expect_refusal(
        AREA_DATA, "non-UTF-8 LLaVA JSON", cli(*_finetune(tiny_llava, out, data=str(data))), match="UTF-8"
    )


# --- option values ------------------------------------------------------------------------

BAD_OPTIONS = {
    "--batch-size 0": ["--batch-size", "0"],
    "--grad-accum 0": ["--grad-accum", "0"],
    "--lr -1": ["--lr", "-1"],
    "--lr nan": ["--lr", "nan"],
    "--lr inf": ["--lr", "inf"],
    "--warmup-ratio 1.5": ["--warmup-ratio", "1.5"],
    "--warmup-ratio -0.1": ["--warmup-ratio", "-0.1"],
    "--weight-decay nan": ["--weight-decay", "nan"],
    "--save-steps 0": ["--save-steps", "0"],
    "--logging-steps 0": ["--logging-steps", "0"],
    "--epochs nan": ["--epochs", "nan", "--max-steps", "-1"],
    "--epochs inf": ["--epochs", "inf", "--max-steps", "-1"],
    "--lr-scheduler bogus": ["--lr-scheduler", "bogus"],
    "--rehearsal-fraction 0": ["--rehearsal-data", "emt:digits", "--rehearsal-fraction", "0"],
    "--rehearsal-fraction nan": ["--rehearsal-data", "emt:digits", "--rehearsal-fraction", "nan"],
    "--limit 0": ["--limit", "0"],
    "--image-root that is a file": ["--image-root", __file__],
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_finetune_option_values_are_named_before_training(tmp_path, tiny_llava, case):
    out = tmp_path / "out"
    expect_refusal(
        AREA_OPTIONS, f"finetune {case}", cli(*_finetune(tiny_llava, out), *BAD_OPTIONS[case]),
        nothing_wasted=_no_training(out),
    )  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [["--method", "lora", "--lora-rank", "0"], ["--method", "lora", "--lora-dropout", "1.5"],
     ["--method", "soft", "--alpha", "nan"], ["--method", "lora", "--lora-alpha", "nan"]],
    ids=" ".join,
)  # fmt: skip
def test_method_option_values_are_named_before_training(tmp_path, tiny_llava, case):
    out = tmp_path / "out"
    argv = [arg for arg in _finetune(tiny_llava, out) if arg != "linear"]
    argv.remove("--method")
    expect_refusal(
        AREA_OPTIONS, f"finetune {' '.join(case)}", cli(*argv, *case), nothing_wasted=_no_training(out)
    )


# --- kill -9 during saves -------------------------------------------------------------------


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(TQDM_DISABLE="1", TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1")
    return env


def _run(argv: list[str], *, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    prefix = [sys.executable, str(TESTS / "kill_at_save.py"), kill[0], str(kill[1]), "--"] if kill else [
        sys.executable, "-m", "emtbench.cli"
    ]  # fmt: skip
    return subprocess.run(
        [*prefix, *argv], capture_output=True, text=True, env=_subprocess_env(), timeout=600
    )


KILL_POINTS = [("config", 8), ("weights", 8), ("trainer_state", 8), ("final", 0), ("config", 4)]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "step"), KILL_POINTS, ids=[f"{p}@{s}" for p, s in KILL_POINTS])
@pytest.mark.parametrize("schedule", ["max-steps", "epochs"])
def test_kill_9_during_a_save_then_resume(tmp_path, tiny_llava, point, step, schedule):
    """The issue: a 0-byte config.json in checkpoint-8 made --resume fail instead of using checkpoint-4;
    the resumed 12-step run recorded global_step 13; .partial-* folders of killed runs stayed."""
    out = tmp_path / "out"
    steps = ["--max-steps", "12"] if schedule == "max-steps" else ["--epochs", "1"]  # 24 examples / 2 = 12
    argv = ["finetune", "--model", str(tiny_llava), "--method", "linear", "--data", "emt:digits",
            "--limit", "24", "--batch-size", "2", "--save-steps", "4", "--lr", "1e-3", *steps,
            "--output", str(out)]  # fmt: skip
    killed = _run(argv, kill=(point, step))
    assert killed.returncode == -9, killed.stderr[-2000:]

    def case() -> bool:
        resumed = _run([*argv, "--resume"])
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        record = json.loads((out / "emtbench_run.json").read_text())
        leftovers = [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]
        training = record["training"]
        assert training["global_step"] == 12, training
        expected_start = {("final", 0): 12, ("config", 4): None}.get((point, step), 4)
        assert training.get("resumed_from_step") == expected_start, training
        assert "train_loss" not in training or training["train_loss"] > 0, training
        assert not leftovers, leftovers
        assert not (tmp_path / ".out.checkpoints").exists()  # removed after success
        return True

    expect_handled(AREA_KILL, f"kill -9 at {point} of checkpoint-{step} ({schedule})", case)


@pytest.mark.parametrize(
    ("case", "extra"),
    [
        ("--eval-limit 0", ["--eval-limit", "0"]),
        ("--eval-args with an unclosed quote", ["--eval-args", '--metadata \'{"split": "test"}']),
        ("--eval-args with bad --metadata JSON", ["--eval-args", '--metadata {"split":']),
        ("--eval-args with an unknown metadata key", ["--eval-args", '--metadata {"fracton":0.2}']),
        ("--eval-args with --limit -1", ["--eval-args", "--limit -1"]),
    ],
)
def test_continual_refuses_eval_options_before_the_first_stage_trains(tmp_path, tiny_llava, case, extra):
    """Otherwise stage 1 trains and the evaluation after it crashes."""
    out = tmp_path / "seq"
    argv = ["continual", "--model", str(tiny_llava), "--method", "linear", "--sequence", "emt:digits",
            "--eval-tasks", "emt_digits", "--limit", "4", "--max-steps", "1", "--batch-size", "2",
            "--output", str(out), *extra]  # fmt: skip
    expect_refusal(
        AREA_OPTIONS,
        f"continual {case}",
        cli(*argv),
        nothing_wasted=lambda: not (out / "stage1_digits").exists(),
    )
