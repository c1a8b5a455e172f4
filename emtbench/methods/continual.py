"""Continual fine-tuning: train a task sequence in order and evaluate every EMT task after each stage.

Each stage starts from the previous stage's saved model (LoRA merged into the weights), optionally
rehearses a seeded share of every earlier task, is saved as a normal model folder, and is evaluated
through the same in-process lm-eval path as ``emtbench eval``. The result is ``accuracy_matrix.json``:
``{"tasks": [eval tasks], "stages": [trained task names], "matrix": [[acc % per eval task] per stage],
"bwt": ..., "forgetting": ...}`` (plus ``"base"``: the accuracies before training, when asked for).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.options import option
from emtbench.core.readers import read_json
from emtbench.methods.finetune import FinetuneOptions, TrainSettings, finetune

MATRIX_FILE = "accuracy_matrix.json"
CONTINUAL_RUN_FILE = "continual_run.json"


def stage_name(spec: str) -> str:
    """``emt:cifar10`` → ``emt_cifar10`` (the eval task it teaches); a JSON file → its stem."""
    if spec.startswith("emt:"):
        from emtbench.datasets.emt import get_dataset

        return get_dataset(spec).task
    return Path(spec).stem


def _stage_argv(model_dir: Path, tasks: list[str], output_path: Path, options: ContinualOptions) -> list[str]:
    try:
        extra = shlex.split(options.eval_args)
    except ValueError as error:
        raise EmtbenchError(f"cannot split into arguments ({error})", where="--eval-args") from None
    return [
        "--model", "hf-multimodal",
        "--model_args", f"pretrained={model_dir}",
        "--tasks", ",".join(tasks),
        "--device", options.device,
        "--batch_size", str(options.eval_batch_size),
        "--apply_chat_template",
        "--output_path", str(output_path),
        *(["--limit", str(options.eval_limit)] if options.eval_limit is not None else []),
        *extra,
    ]  # fmt: skip


def check_stage_evaluation(options: ContinualOptions) -> None:
    """The evaluation after each stage, checked before the first stage trains (else it fails after it)."""
    from emtbench.tasks.evaluation import EvaluateOptions, check_eval_argv

    if options.eval_limit is not None and options.eval_limit < 1:
        raise EmtbenchError(
            f"--eval-limit must be at least 1, got {options.eval_limit}", where="--eval-limit"
        )
    argv = _stage_argv(Path(options.model), list(options.eval_tasks), options.output / "eval", options)
    check_eval_argv(argv, list(options.eval_tasks))
    try:
        EvaluateOptions.from_argv(argv)
    except SystemExit:  # lm-eval's parser printed what it did not understand
        raise EmtbenchError(
            "lm-eval does not accept these arguments (see above)", where="--eval-args"
        ) from None
    except ValueError as error:
        raise EmtbenchError(str(error), where="--eval-args") from None


def evaluate_stage(
    model_dir: Path, tasks: list[str], output_path: Path, options: ContinualOptions
) -> dict[str, float]:
    """Accuracy (%) per task of one model folder, through :func:`emtbench.evaluate` (``emtbench eval``'s path).

    A stage evaluated by an interrupted earlier run is read back from its results file instead.
    """
    from emtbench.tasks.evaluation import EvaluateOptions, evaluate

    finished = _read_accuracies(output_path, tasks)
    if finished is not None:
        return finished
    argv = _stage_argv(model_dir, tasks, output_path, options)
    eval_options = EvaluateOptions.from_argv(argv)  # extra arguments override, as on lm-eval's command line
    result = evaluate(eval_options)
    missing = [task for task in tasks if "acc,none" not in result.results.get("results", {}).get(task, {})]
    if missing:
        raise EmtbenchError(
            f"lm-eval reported no accuracy for {', '.join(missing)} under {output_path}",
            where="--eval-tasks",
            fix="check the eval task names with `emtbench eval ls` and the lm-eval log above",
        )
    return {task: 100.0 * result.metric(task, "acc") for task in tasks}


def _read_accuracies(output_path: Path, tasks: list[str]) -> dict[str, float] | None:
    """The accuracies in the results file an earlier run of this stage wrote (the latest by its timestamped name)."""
    files = (
        sorted(output_path.rglob("results_*.json"), key=lambda path: path.name)
        if output_path.is_dir()
        else []
    )
    if not files:
        return None
    data = read_json(files[-1], what="results file")  # a run killed mid-write: a named error
    results = data.get("results", {}) if isinstance(data, dict) else {}
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
    from emtbench.core.paths import check_writable_dir

    check_writable_dir(output, flag="--output")  # a file or an unwritable place: refused before training
    if not output.exists() or overwrite:
        return
    if not output.is_dir():
        raise EmtbenchError(f"{output} exists and is not a directory", where="--output")
    previous = output / CONTINUAL_RUN_FILE
    if previous.is_file():
        if read_json(previous, what="continual run record") == json.loads(json.dumps(config, default=str)):
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


@dataclass
class ContinualOptions:
    """A task sequence to train in order, the tasks to evaluate after every stage, and where to write."""

    model: str = option(help="base model: a Hugging Face folder or Hub id")
    sequence: list[str] = option(comma_list=True, help="comma-separated data specs, trained in this order")
    eval_tasks: list[str] = option(comma_list=True, help="comma-separated lm-eval tasks run after each stage")
    output: Path = option(help="folder to write (refused if it holds a different run)")
    settings: TrainSettings = field(default_factory=TrainSettings)
    rehearsal_fraction: float = option(
        0.0, help="mix this share of every earlier task into each stage (paper: 0.01; default 0 = off)"
    )
    image_root: str | None = option(None, help="folder that a LLaVA JSON's image paths are relative to")
    limit: int | None = option(None, help="use a seeded random subset of N training examples per task")
    eval_limit: int | None = option(None, help="evaluate only the first N examples of each task")
    eval_batch_size: int = option(8, help="evaluation batch size")
    eval_base: bool = option(False, help="also evaluate the base model (key 'base')")
    device: str | None = option(None, help="evaluation device (default: cuda if available, else cpu)")
    eval_args: str = option(
        "", help='extra lm-eval arguments, quoted, e.g. "--metadata \'{\\"split\\": \\"test\\"}\'"'
    )
    overwrite: bool = option(False, help="replace an existing output folder")

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if isinstance(self.sequence, str):
            self.sequence = [part.strip() for part in self.sequence.split(",") if part.strip()]
        if isinstance(self.eval_tasks, str):
            self.eval_tasks = [part.strip() for part in self.eval_tasks.split(",") if part.strip()]
        if self.limit is not None and self.limit < 1:
            raise EmtbenchError("--limit must be at least 1", where="--limit")
        if self.device is None:
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class ContinualResult:
    """The accuracy matrix of a continual run and where it is."""

    output: Path
    matrix: dict[str, Any]
    """``tasks``, ``stages``, ``matrix`` (acc % per eval task, per stage), ``bwt``, ``forgetting``, ``stage_dirs``."""

    @property
    def matrix_file(self) -> Path:
        return self.output / MATRIX_FILE


def continual(options: ContinualOptions | None = None, /, **values: Any) -> ContinualResult:
    """Train a task sequence stage by stage, evaluate after every stage, write ``accuracy_matrix.json``.

    Example::

        import emtbench
        run = emtbench.continual(
            model="llava-hf/llava-1.5-7b-hf", method="lora", sequence=["emt:mnist", "emt:cifar10"],
            eval_tasks=["emt_mnist", "emt_cifar10"], output="out/continual-lora", rehearsal_fraction=0.01,
        )
        print(run.matrix["bwt"], run.matrix_file)

    Rerunning the same call after an interruption continues where it stopped.
    """
    from emtbench.metrics.forgetting import AccuracyMatrix

    if options is None:
        own = {f.name for f in dataclasses.fields(ContinualOptions)} - {"settings"}
        settings = values.pop("settings", None) or TrainSettings.of(
            **{k: values.pop(k) for k in list(values) if k not in own}
        )
        options = ContinualOptions(settings=settings, **values)
    elif values:
        raise TypeError("give a ContinualOptions or keyword arguments, not both")
    settings = options.settings
    sequence, eval_tasks, model_path = list(options.sequence), list(options.eval_tasks), options.model
    if not sequence:
        raise EmtbenchError(
            "the sequence names no tasks", where="--sequence", fix="e.g. emt:mnist,emt:cifar10"
        )
    if not eval_tasks:
        raise EmtbenchError("no tasks to evaluate", where="--eval-tasks", fix="e.g. emt_mnist,emt_cifar10")
    check_stage_evaluation(options)  # bad --eval-limit / --eval-args: refused before stage 1 trains
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
    output = options.output
    names = [stage_name(spec) for spec in sequence]
    config = {
        "base_model": model_path,
        "sequence": sequence,
        "eval_tasks": eval_tasks,
        "settings": settings.record(),
        "rehearsal_fraction": options.rehearsal_fraction,
        "limit": options.limit,
        "eval_limit": options.eval_limit,
        "eval_args": options.eval_args,
    }
    check_continual_output(output, config, overwrite=options.overwrite)
    if options.overwrite and output.exists():
        import shutil

        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    _write_json_atomically(output / CONTINUAL_RUN_FILE, json.loads(json.dumps(config, default=str)))
    base_row = None
    if options.eval_base:
        base_scores = evaluate_stage(Path(model_path), eval_tasks, output / "eval" / "stage0_base", options)
        base_row = [base_scores[task] for task in eval_tasks]
    matrix: list[list[float]] = []
    previous = model_path
    for index, (spec, name) in enumerate(zip(sequence, names, strict=True)):
        label = f"stage{index + 1}_{name}"
        stage_dir = output / label
        if not (stage_dir / "emtbench_run.json").is_file():
            finetune(
                FinetuneOptions(
                    model=previous,
                    data=spec,
                    output=stage_dir,
                    settings=copy.deepcopy(settings),
                    rehearsal_data=sequence[:index] if options.rehearsal_fraction > 0 else [],
                    rehearsal_fraction=options.rehearsal_fraction or 0.01,
                    image_root=options.image_root,
                    limit=options.limit,
                    resume=True,
                    checkpoint_dir=output / "checkpoints" / label,
                )
            )
        scores = evaluate_stage(stage_dir, eval_tasks, output / "eval" / label, options)
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
    return ContinualResult(output, data)
