"""The demo's stages: which public API call each step makes (and the ``emtbench`` command that makes
the same call), where each stage writes, and the key that decides when a rerun skips it.

Steps call the Python API in this process (:func:`emtbench.evaluate`, :func:`emtbench.finetune`, ...):
lm-eval, transformers and torch are imported once instead of once per stage, and lm-eval's task index
is built once. Each step also carries the command line that does the same thing, printed before it runs
and kept in ``stage.json``, so any step can be rerun by hand.

Layout under ``--out`` (one folder per stage, written atomically with
:func:`emtbench.core.fsutil.staged_directory`; ``stage.json`` inside is the completion marker)::

    eval-base/         emt/ (lm-eval results + samples), language/ (emt_stdlib_ppl results)
    finetune-lora/     model/ (the model `emtbench finetune` wrote after the last step) and
                       model-step8/, model-step16/ (its --snapshot-steps: the forgetting curve)
    eval-lora-step8/, eval-lora-step16/, eval-lora/
    tailor/, dare/     Model Tailor / DARE of the run that forgets most (full demo); eval-tailor/, eval-dare/
    leaderboard/       manifest.yaml, site/ (index.html, leaderboard.json, leaderboard.csv)
    demo_report.json   options, per-stage timings, every run's metrics, the curve, every Δ with its CI

A stage is skipped when its ``stage.json`` holds the same key: a hash of its commands (with ``--out``
written as ``<out>``) and of the keys of the stages it reads, so changed options redo exactly the
stages they affect and everything downstream of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.demo.options import (
    ALIGNMENT_DATA,
    EMT_TASKS,
    FUSIONS,
    LANGUAGE_TASK,
    MARKER,
    METHODS,
    OTHER_TASKS,
    RECIPE_VERSION,
    TARGET_DATASET,
    TARGET_TASK,
    DemoOptions,
)


@dataclass
class Step:
    """One public API call and the ``emtbench`` command line that makes the same call."""

    command: list[str]
    """``emtbench`` arguments (without the program name)."""
    options: Any
    """The options object the call takes (what ``command`` parses to)."""
    call: Callable[[Any], Any]

    def run(self) -> Any:
        return self.call(self.options)


@dataclass
class Stage:
    """One folder under ``--out``, made by one or more steps."""

    name: str
    title: str
    steps: Callable[[Path], list[Step]]
    """Given the folder to write into, the steps to run in order."""
    depends: tuple[str, ...] = ()
    prepare: Callable[[Path], None] | None = None
    """Writes input files (the leaderboard manifest) into the folder before the steps run."""
    summarize: Callable[[Path], dict[str, Any]] | None = None


@dataclass
class StageOutcome:
    name: str
    status: str
    """``ran`` or ``skipped`` (finished by an earlier run with the same key)."""
    seconds: float
    """Time of this run, or, for a skipped stage, the time recorded when it ran."""
    summary: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- steps


def eval_steps(options: DemoOptions, model: Path, here: Path) -> list[Step]:
    """EMT probes (bf16, greedy) and the stdlib language probe (fp32: perplexity sums many log-probs).

    Both dtypes are explicit: the base is saved in bf16 and fine-tuned models in fp32, and with lm-eval's
    ``dtype=auto`` the perplexity of a projector-only (``linear``) run moved by ~0.9 from rounding alone.
    The EMT probes use eager attention: PyTorch's CPU SDPA kernel spent 34% of a batch-64 generation in
    its one-token decode steps, and eager generates the 3 x 64 answers 11% faster on 2 threads (20% on
    1), as close to fp32 as SDPA (161 vs 160 of 192 answers equal to fp32's on a LoRA fine-tune; 188 of
    192 equal to SDPA's). Its grouped form, ``emt_eager_gqa`` (models.flagship.grouped_attention), gives
    eager's answers bit for bit without copying the shared key/value heads.
    The fp32 language probe reads long windows, where SDPA is the better kernel, and keeps it.
    """
    from emtbench.models.flagship.grouped_attention import NAME as GROUPED_EAGER_ATTENTION
    from emtbench.tasks.evaluation import EvaluateOptions, evaluate

    emt = EvaluateOptions(
        tasks=list(EMT_TASKS),
        model="hf-multimodal",
        model_args={
            "pretrained": str(model),
            "dtype": "bfloat16",
            "attn_implementation": GROUPED_EAGER_ATTENTION,
        },
        device=options.device,
        limit=options.limit,
        batch_size=options.eval_batch_size,
        apply_chat_template=True,
        gen_kwargs={"max_gen_toks": options.max_gen_toks},
        metadata={"source": "offline"},
        log_samples=True,
        output_path=here / "emt",
    )
    language = EvaluateOptions(
        tasks=[LANGUAGE_TASK],
        model="hf-multimodal",
        model_args={"pretrained": str(model), "dtype": "float32"},
        device=options.device,
        limit=options.language_docs,
        batch_size=1,
        log_samples=True,
        output_path=here / "language",
    )
    from emtbench.demo.reuse import evaluate_language_once

    return [
        Step(["eval", *emt.to_argv()], emt, evaluate),
        # the same call, unless a finished stage measured identical language-model weights (demo.reuse)
        Step(["eval", *language.to_argv()], language, lambda o: evaluate_language_once(o, options.out)),
    ]


def finetune_step(options: DemoOptions, base: Path, run: str, here: Path) -> Step:
    """``emtbench finetune`` of one of :data:`~emtbench.demo.options.METHODS`, with its snapshots."""
    from emtbench.methods.finetune import FinetuneOptions, TrainSettings, finetune

    recipe = METHODS[run]
    rate = {} if recipe.learning_rate is None else {"learning_rate": recipe.learning_rate}
    finetune_options = FinetuneOptions(
        model=str(base),
        data=f"emt:{TARGET_DATASET}",
        output=here / "model",
        settings=TrainSettings.of(
            recipe.method,
            max_steps=options.train_steps,
            batch_size=options.train_batch_size,
            seed=options.seed,
            logging_steps=1,
            bf16=options.train_bf16,
            **rate,
        ),
        rehearsal_data=list(ALIGNMENT_DATA) if recipe.rehearsal else [],
        rehearsal_fraction=options.rehearsal_fraction if recipe.rehearsal else 0.01,
        limit=options.train_examples,
        train_prompt=options.train_prompt,
        snapshot_steps=list(options.snapshot_steps),
    )
    return Step(["finetune", *finetune_options.to_argv()], finetune_options, finetune)


def fusion_step(options: DemoOptions, base: Path, fusion: str, finetuned: Path, here: Path) -> Step:
    from emtbench.methods.fusion.base import DensityParameters
    from emtbench.methods.fusion.pipeline import MergeOptions, merge, tailor

    if fusion == "tailor":
        tailor_options = MergeOptions(
            pretrained=str(base),
            finetuned=[str(finetuned)],
            output=here / "model",
            method="model-tailor",
            calib_data=[f"emt:{TARGET_DATASET}"],
            calib_samples=options.calib_samples,
            layers=options.tailor_layers,
            seed=options.seed,
        )
        return Step(["tailor", *tailor_options.to_argv(with_method=False)], tailor_options, tailor)
    merge_options = MergeOptions(
        pretrained=str(base),
        finetuned=[str(finetuned)],
        output=here / "model",
        method="dare",
        parameters=DensityParameters(drop_rate=options.drop_rate),
        seed=options.seed,
    )
    return Step(["merge", *merge_options.to_argv()], merge_options, merge)


def leaderboard_step(here: Path) -> Step:
    from emtbench.leaderboard.site import build_leaderboard

    manifest, site = here / "manifest.yaml", here / "site"
    return Step(
        ["leaderboard", "build", str(manifest), "--out", str(site)],
        {"manifest": manifest, "out": site},
        lambda values: build_leaderboard(values["manifest"], values["out"]),
    )


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
    from emtbench.demo.reuse import reused_from

    return {
        "emt": tasks,
        "language": {
            name: probe[f"{name},none"] for name in ("word_perplexity", "byte_perplexity", "bits_per_byte")
        }
        | {
            "documents": language.get("n-samples", {}).get(LANGUAGE_TASK, {}).get("effective"),
            "reused_from": reused_from(here / "language"),
        },
    }


def summarize_model(here: Path) -> dict[str, Any]:
    record = json.loads((here / "model" / "emtbench_run.json").read_text())
    return {"parameters": record.get("parameters"), "method": record.get("method")}


def summarize_finetune(here: Path) -> dict[str, Any]:
    summary = summarize_model(here)
    record = json.loads((here / "model" / "emtbench_run.json").read_text())
    summary["training"] = record.get("training", {})
    summary["data"] = record.get("data", {})
    summary["learning_rate"] = record.get("settings", {}).get("learning_rate")
    return summary


# ---------------------------------------------------------------------------------------- the curve


@dataclass(frozen=True)
class RunPoint:
    """One evaluated model: its name in the table, its eval stage, which run's curve it is on, at which step."""

    name: str
    curve: str | None
    """The fine-tuned run whose curve this point is on (``None``: base and fusions)."""
    step: int | None
    producer: str | None
    """The stage that wrote the model (``None`` for the base)."""

    @property
    def eval_stage(self) -> str:
        return f"eval-{self.name}"


def run_points(options: DemoOptions) -> list[RunPoint]:
    """Evaluated models in table order: base, each run's snapshots then its end, then the fusions."""
    points = [RunPoint("base", None, 0, None)]
    for run in options.methods:
        for step in options.curve_steps:
            points.append(RunPoint(f"{run}-step{step}", run, step, f"finetune-{run}"))
        points.append(RunPoint(run, run, options.train_steps, f"finetune-{run}"))
    if options.fuses:
        points += [RunPoint(fusion, None, None, fusion) for fusion in FUSIONS]
    return points


def run_names(options: DemoOptions) -> list[str]:
    return [point.name for point in run_points(options)]


def model_folder(options: DemoOptions, point: RunPoint) -> Path:
    if point.producer is None:
        raise EmtbenchError("the base model is not written by a stage")
    folder = options.out / point.producer / "model"
    if point.curve is not None and point.step != options.train_steps:
        folder = folder.parent / f"model-step{point.step}"
    return folder


BOOTSTRAP_RESAMPLES = 2000
"""Resamples of every paired interval (the leaderboard's and the demo report's)."""

FUSED_CANDIDATES = ("linear", "lora", "msgm", "full")
"""Runs Model Tailor and DARE may be applied to: the plain fine-tunes (``rehearsal`` is a mitigation)."""


def forgetting_of(base: dict[str, Any], run: dict[str, Any]) -> float:
    """Mean accuracy lost on the other tasks (points): base minus run, averaged over :data:`OTHER_TASKS`."""
    drops = [100 * (base["emt"][task]["acc"] - run["emt"][task]["acc"]) for task in OTHER_TASKS]
    return round(sum(drops) / len(drops), 6)  # rounded: equal losses must tie, not differ in the 15th digit


def most_forgetting(options: DemoOptions) -> tuple[str, dict[str, float]]:
    """The rule, fixed before any run: fuse the plain fine-tune whose end-of-run model lost the most
    accuracy on the other tasks (mean over digits and Fashion-MNIST, base minus run); a tie goes to the
    one listed first (linear, lora, msgm, full). Read from the finished eval stages' ``stage.json``."""
    summaries = {}
    for name in ("base", *[m for m in FUSED_CANDIDATES if m in options.methods]):
        marker = options.out / f"eval-{name}" / MARKER
        try:
            summaries[name] = json.loads(marker.read_text(encoding="utf-8"))["summary"]
        except (OSError, ValueError, KeyError):
            raise EmtbenchError(
                f"the fusion stages choose their model from eval-{name}, which has not finished",
                where="demo plan",
                fix="run the demo: the evaluation stages come first",
            ) from None
    forgetting = {m: forgetting_of(summaries["base"], s) for m, s in summaries.items() if m != "base"}
    best = max(forgetting, key=lambda m: (forgetting[m], -FUSED_CANDIDATES.index(m)))
    return best, forgetting


# ---------------------------------------------------------------------------------------- plan


def manifest(options: DemoOptions, base: Path) -> dict[str, Any]:
    """Leaderboard manifest over the eval stages (paths relative to the leaderboard folder)."""
    fused = most_forgetting(options)[0] if options.fuses else None
    runs: list[dict[str, Any]] = []
    for point in run_points(options):
        entry: dict[str, Any] = {
            "name": point.name,
            "results": f"../{point.eval_stage}/emt",
            "target_tasks": [TARGET_TASK],
        }
        if point.producer is None:
            entry["method"] = "pretrained"
        else:
            entry["base"] = "base"
            if point.curve is not None:
                entry["method"] = point.curve
                entry["curve"] = point.curve
                entry["step"] = point.step
            else:
                entry["method"] = f"{point.name} on {fused}"
            relative = model_folder(options, point).relative_to(options.out)
            entry["run_record"] = f"../{relative.as_posix()}/emtbench_run.json"
        runs.append(entry)
    runs[0]["step"] = 0
    return {
        "title": "emtbench demo: fine-tuning the offline flagship on Animal-MNIST",
        "description": (
            f"Base: {base.name}, aligned on digits and Fashion-MNIST. Fine-tuned on Animal-MNIST (training "
            f"split, {options.train_examples} examples, {options.train_steps} steps of {options.train_batch_size}, "
            f"{options.train_prompt} training prompt); evaluated on {options.limit} held-out test images per task, "
            "at several steps of each run (the curve). Target task emt_animal_mnist; original tasks "
            "emt_digits and emt_fashion_mnist. Language perplexity (emt_stdlib_ppl) is in the demo's "
            "terminal table and demo_report.json."
        ),
        "groups": {"EMT": list(EMT_TASKS), "original": list(OTHER_TASKS)},
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "confidence": 0.95, "seed": 0},
        "runs": runs,
    }


def plan(options: DemoOptions, base: Path) -> list[Stage]:
    out = options.out
    points = run_points(options)
    stages = [
        Stage(
            "eval-base",
            "evaluate the base model (EMT probes + stdlib perplexity)",
            lambda here: eval_steps(options, base, here),
            summarize=summarize_eval,
        )
    ]
    for run in options.methods:
        recipe = METHODS[run]
        rehearsal = f" + rehearsal of {', '.join(ALIGNMENT_DATA)}" if recipe.rehearsal else ""
        stages.append(
            Stage(
                f"finetune-{run}",
                f"fine-tune with --method {recipe.method} on emt:{TARGET_DATASET}{rehearsal}",
                lambda here, r=run: [finetune_step(options, base, r, here)],
                summarize=summarize_finetune,
            )
        )
        for point in points:
            if point.curve == run:
                stages.append(_eval_stage(options, point))
    if options.fuses:
        ends = tuple(f"eval-{m}" for m in FUSED_CANDIDATES if m in options.methods)
        producers = tuple(f"finetune-{m}" for m in FUSED_CANDIDATES if m in options.methods)

        def fused_model() -> Path:
            return out / f"finetune-{most_forgetting(options)[0]}" / "model"

        for fusion in FUSIONS:
            stages.append(
                Stage(
                    fusion,
                    f"{'Model Tailor' if fusion == 'tailor' else 'DARE merge'} of the run that forgets most",
                    lambda here, f=fusion: [fusion_step(options, base, f, fused_model(), here)],
                    depends=("eval-base", *ends, *producers),
                    summarize=summarize_model,
                )
            )
            stages.append(_eval_stage(options, next(p for p in points if p.name == fusion)))
    evals = tuple(stage.name for stage in stages if stage.name.startswith("eval-"))
    models = tuple(stage.name for stage in stages if not stage.name.startswith("eval-"))
    stages.append(
        Stage(
            "leaderboard",
            "build the leaderboard page from every run",
            lambda here: [leaderboard_step(here)],
            depends=evals + models,
            prepare=lambda here: _write_manifest(here, manifest(options, base)),
        )
    )
    return stages


def _eval_stage(options: DemoOptions, point: RunPoint) -> Stage:
    model = model_folder(options, point)
    step = f" after {point.step} of {options.train_steps} steps" if point.curve else ""
    return Stage(
        point.eval_stage,
        f"evaluate {point.curve or point.name}{step} (EMT probes + stdlib perplexity)",
        lambda here: eval_steps(options, model, here),
        depends=(point.producer,) if point.producer else (),
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
            "commands": [step.command for step in stage.steps(placeholder)],
            "depends": [keys[name] for name in stage.depends],
        },
        sort_keys=True,
    ).replace(str(out), "<out>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]
