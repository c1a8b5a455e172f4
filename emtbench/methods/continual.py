"""Continual fine-tuning: train a task sequence in order and evaluate every EMT task after each stage.

Each stage starts from the previous stage's saved model (LoRA merged into the weights), optionally
rehearses a seeded share of every earlier task, is saved as a normal model folder, and is evaluated
through the same in-process lm-eval path as ``emtbench eval``. The result is ``accuracy_matrix.json``:
``{"tasks": [eval tasks], "stages": [trained task names], "matrix": [[acc % per eval task] per stage],
"bwt": ..., "forgetting": ...}`` (plus ``"base"``: the accuracies before training, when asked for).
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.methods.finetune import TrainSettings, finetune

MATRIX_FILE = "accuracy_matrix.json"
CONTINUAL_RUN_FILE = "continual_run.json"


def stage_name(spec: str) -> str:
    """``emt:cifar10`` → ``emt_cifar10`` (the eval task it teaches); a JSON file → its stem."""
    if spec.startswith("emt:"):
        from emtbench.datasets.emt import get_dataset

        return get_dataset(spec).task
    return Path(spec).stem


def evaluate(
    model_dir: Path,
    tasks: list[str],
    output_path: Path,
    *,
    limit: int | None,
    batch_size: int,
    device: str,
    extra_args: list[str],
) -> dict[str, float]:
    """Accuracy (%) per task of one model folder, via ``emtbench eval``'s lm-eval path."""
    from emtbench.tasks.evaluation import run_lm_eval

    finished = _read_accuracies(output_path, tasks)
    if finished is not None:
        return finished
    argv = [
        "run",
        "--model", "hf-multimodal",
        "--model_args", f"pretrained={model_dir}",
        "--tasks", ",".join(tasks),
        "--device", device,
        "--batch_size", str(batch_size),
        "--apply_chat_template",
        "--output_path", str(output_path),
        *(["--limit", str(limit)] if limit else []),
        *extra_args,
    ]  # fmt: skip
    run_lm_eval(argv)
    found = _read_accuracies(output_path, tasks)
    if found is None:
        raise EmtbenchError(
            f"lm-eval wrote no results for {', '.join(tasks)} under {output_path}",
            where="--eval-tasks",
            fix="check the eval task names with `emtbench eval ls` and the lm-eval log above",
        )
    return found


def _read_accuracies(output_path: Path, tasks: list[str]) -> dict[str, float] | None:
    files = sorted(output_path.rglob("results_*.json"), key=os.path.getmtime) if output_path.is_dir() else []
    if not files:
        return None
    results = json.loads(files[-1].read_text()).get("results", {})
    if not all(task in results and "acc,none" in results[task] for task in tasks):
        return None
    return {task: 100.0 * float(results[task]["acc,none"]) for task in tasks}


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        json.dump(data, stream, indent=2)
        stream.write("\n")
    os.replace(temporary, path)


def check_continual_output(output: Path, config: dict[str, Any], *, overwrite: bool) -> None:
    """Continue an interrupted identical run; refuse a folder holding a different one."""
    if not output.exists() or overwrite:
        return
    if not output.is_dir():
        raise EmtbenchError(f"{output} exists and is not a directory", where="--output")
    previous = output / CONTINUAL_RUN_FILE
    if previous.is_file():
        if json.loads(previous.read_text()) == json.loads(json.dumps(config, default=str)):
            return
        raise EmtbenchError(
            f"{output} already holds a different continual run",
            where="--output",
            fix="pass --overwrite to replace it, or choose another --output",
        )
    if any(output.iterdir()):
        raise EmtbenchError(
            f"{output} is not empty and holds no emtbench continual run",
            where="--output",
            fix="choose an empty or new directory, or pass --overwrite",
        )


def continual(
    model_path: str,
    sequence: list[str],
    eval_tasks: list[str],
    output: str | Path,
    settings: TrainSettings,
    *,
    rehearsal_fraction: float = 0.0,
    image_root: str | None = None,
    limit: int | None = None,
    eval_limit: int | None = None,
    eval_batch_size: int = 8,
    eval_base: bool = False,
    device: str = "cpu",
    eval_args: str = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``sequence`` in order, evaluate ``eval_tasks`` after every stage, write the matrix."""
    from emtbench.metrics.forgetting import AccuracyMatrix

    if not sequence:
        raise EmtbenchError(
            "the sequence names no tasks", where="--sequence", fix="e.g. emt:mnist,emt:cifar10"
        )
    if not eval_tasks:
        raise EmtbenchError("no tasks to evaluate", where="--eval-tasks", fix="e.g. emt_mnist,emt_cifar10")
    from accelerate import PartialState

    if PartialState().num_processes > 1:
        # Every stage also runs lm-eval in-process and writes shared files; that is single-process code.
        raise EmtbenchError(
            "emtbench continual runs in one process, not under a multi-process `accelerate launch`",
            where="accelerate launch",
            fix="train each stage with `accelerate launch -m emtbench.cli finetune ... --model PREVIOUS_STAGE` "
            "and evaluate it with `emtbench eval` (docs/training.md), or run continual without accelerate launch",
        )
    if settings.keep_adapter:
        raise EmtbenchError(
            "a continual sequence merges LoRA after every stage",
            where="--keep-adapter",
            fix="drop --keep-adapter",
        )
    output = Path(output)
    names = [stage_name(spec) for spec in sequence]
    config = {
        "base_model": model_path,
        "sequence": sequence,
        "eval_tasks": eval_tasks,
        "settings": asdict(settings),
        "rehearsal_fraction": rehearsal_fraction,
        "limit": limit,
        "eval_limit": eval_limit,
        "eval_args": eval_args,
    }
    check_continual_output(output, config, overwrite=overwrite)
    if overwrite and output.exists():
        import shutil

        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    _write_json_atomically(output / CONTINUAL_RUN_FILE, json.loads(json.dumps(config, default=str)))
    evaluate_kwargs = {
        "limit": eval_limit,
        "batch_size": eval_batch_size,
        "device": device,
        "extra_args": shlex.split(eval_args),
    }
    base_row = None
    if eval_base:
        base_scores = evaluate(
            Path(model_path), eval_tasks, output / "eval" / "stage0_base", **evaluate_kwargs
        )
        base_row = [base_scores[task] for task in eval_tasks]
    matrix: list[list[float]] = []
    previous = model_path
    for index, (spec, name) in enumerate(zip(sequence, names, strict=True)):
        label = f"stage{index + 1}_{name}"
        stage_dir = output / label
        stage_settings = copy.deepcopy(settings)
        if not (stage_dir / "emtbench_run.json").is_file():
            finetune(
                previous,
                spec,
                stage_dir,
                stage_settings,
                rehearsal_specs=sequence[:index] if rehearsal_fraction > 0 else (),
                rehearsal_fraction=rehearsal_fraction or 0.01,
                image_root=image_root,
                limit=limit,
                resume=True,
                checkpoint_dir=output / "checkpoints" / label,
            )
        scores = evaluate(stage_dir, eval_tasks, output / "eval" / label, **evaluate_kwargs)
        matrix.append([scores[task] for task in eval_tasks])
        previous = str(stage_dir)
    if (output / "checkpoints").is_dir() and not any((output / "checkpoints").iterdir()):
        (output / "checkpoints").rmdir()
    data: dict[str, Any] = {"tasks": eval_tasks, "stages": names, "matrix": matrix}
    parsed = AccuracyMatrix.from_dict(data)
    data["bwt"] = parsed.backward_transfer()
    data["forgetting"] = parsed.forgetting()
    if base_row is not None:
        data["base"] = base_row
    data["stage_dirs"] = [f"stage{i + 1}_{name}" for i, name in enumerate(names)]
    _write_json_atomically(output / MATRIX_FILE, data)
    return data
