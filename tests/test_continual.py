"""`emtbench continual` on a two-task sequence: stage checkpoints and the accuracy matrix."""

from __future__ import annotations

import json

import pytest
from conftest import run_emtbench
from test_finetune import write_llava_json

from emtbench.metrics.forgetting import AccuracyMatrix


@pytest.fixture(scope="module")
def continual_run(tiny_llava_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("continual")
    shapes = write_llava_json(root / "data", count=6, name="shapes")
    output = root / "run"
    argv = [
        "continual", "--model", str(tiny_llava_dir), "--method", "lora", "--lora-rank", "4",
        "--sequence", f"emt:digits,{shapes}", "--eval-tasks", "emt_digits,emt_fashion_mnist",
        "--rehearsal-fraction", "0.01", "--limit", "8", "--max-steps", "2", "--batch-size", "4",
        "--eval-limit", "3", "--eval-batch-size", "3", "--device", "cpu", "--output", str(output),
    ]  # fmt: skip
    assert run_emtbench(*argv) == 0
    return output, argv


@pytest.mark.slow
def test_continual_writes_a_two_by_two_matrix_and_stage_checkpoints(continual_run):
    output, _ = continual_run
    data = json.loads((output / "accuracy_matrix.json").read_text())
    assert data["tasks"] == ["emt_digits", "emt_fashion_mnist"]
    assert data["stages"] == ["emt_digits", "shapes"]
    assert len(data["matrix"]) == 2 and all(len(row) == 2 for row in data["matrix"])
    assert all(0.0 <= value <= 100.0 for row in data["matrix"] for value in row)
    parsed = AccuracyMatrix.from_dict(data)
    assert data["bwt"] == pytest.approx(data["matrix"][1][0] - data["matrix"][0][0])
    assert data["bwt"] == parsed.backward_transfer() and data["forgetting"] == parsed.forgetting()

    first, second = (
        json.loads((output / name / "emtbench_run.json").read_text()) for name in data["stage_dirs"]
    )
    assert first["base_model"].endswith("tiny-llava") and second["base_model"] == str(
        output / "stage1_emt_digits"
    )
    assert second["data"]["rehearsal"] == ["emt:digits"]
    assert second["data"]["examples"]["rehearsal:emt:digits"] == 1  # 1% of 8 examples, at least one
    assert (output / "stage2_shapes" / "model.safetensors").is_file()
    assert not (output / "checkpoints" / "stage1_emt_digits").exists()


@pytest.mark.slow
def test_rerunning_continues_and_a_different_run_is_refused(continual_run, capsys):
    output, argv = continual_run
    matrix_before = (output / "accuracy_matrix.json").read_text()
    weights = output / "stage2_shapes" / "model.safetensors"
    modified = weights.stat().st_mtime_ns
    assert run_emtbench(*argv) == 0  # everything is already there: no training, no evaluation
    assert weights.stat().st_mtime_ns == modified
    assert (
        json.loads((output / "accuracy_matrix.json").read_text())["matrix"]
        == json.loads(matrix_before)["matrix"]
    )

    different = [*argv]
    different[different.index("--max-steps") + 1] = "3"
    assert run_emtbench(*different) == 2
    assert "already holds a different continual run" in capsys.readouterr().err


def test_continual_refuses_a_multi_process_launch(tmp_path, tiny_llava_dir, monkeypatch):
    """Stages evaluate in-process and write shared files: under `accelerate launch` it must stop early."""
    import accelerate

    from emtbench.core.errors import EmtbenchError
    from emtbench.methods.continual import ContinualOptions, continual
    from emtbench.methods.finetune import TrainSettings

    class TwoProcesses:
        num_processes = 2

    monkeypatch.setattr(accelerate, "PartialState", TwoProcesses)
    with pytest.raises(EmtbenchError, match="runs in one process") as error:
        continual(
            ContinualOptions(
                model=str(tiny_llava_dir),
                sequence=["emt:digits"],
                eval_tasks=["emt_digits"],
                output=tmp_path / "run",
                settings=TrainSettings(),
            )
        )
    assert "accelerate launch" in error.value.fix
    assert not (tmp_path / "run").exists()
