"""The demo's stages: which public API call each step makes (and the ``emtbench`` command that makes
the same call), where each stage writes, and the key that decides when a rerun skips it.

Steps call the Python API in this process (:func:`emtbench.evaluate`, :func:`emtbench.finetune`, ...):
lm-eval, transformers and torch are imported once instead of once per stage, and lm-eval's task index
is built once. Each step also carries the command line that does the same thing, printed before it runs
and kept in ``stage.json``, so any step can be rerun by hand.

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

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.demo.options import (
    EMT_TASKS,
    FULL_METHODS,
    FUSIONS,
    LANGUAGE_TASK,
    RECIPE_VERSION,
    TARGET_DATASET,
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
    """
    from emtbench.tasks.evaluation import EvaluateOptions, evaluate

    emt = EvaluateOptions(
        tasks=list(EMT_TASKS),
        model="hf-multimodal",
        model_args={"pretrained": str(model), "dtype": "bfloat16"},
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
    return [Step(["eval", *o.to_argv()], o, evaluate) for o in (emt, language)]


def finetune_step(options: DemoOptions, base: Path, method: str, here: Path) -> Step:
    from emtbench.methods.finetune import FinetuneOptions, TrainSettings, finetune

    finetune_options = FinetuneOptions(
        model=str(base),
        data=f"emt:{TARGET_DATASET}",
        output=here / "model",
        settings=TrainSettings.of(
            method,
            max_steps=options.train_steps,
            batch_size=options.train_batch_size,
            seed=options.seed,
            logging_steps=1,
        ),
        limit=options.train_examples,
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
            lambda here: eval_steps(options, base, here),
            summarize=summarize_eval,
        )
    ]
    for method in options.methods:
        stages.append(
            Stage(
                f"finetune-{method}",
                f"fine-tune with --method {method} on emt:{TARGET_DATASET}",
                lambda here, m=method: [finetune_step(options, base, m, here)],
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
                    lambda here, f=fusion, ft=finetuned: [fusion_step(options, base, f, ft, here)],
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
            lambda here: [leaderboard_step(here)],
            depends=evals + models,
            prepare=lambda here: _write_manifest(here, manifest(options, base)),
        )
    )
    return stages


def _eval_stage(options: DemoOptions, run: str, model: Path, producer: str) -> Stage:
    return Stage(
        f"eval-{run}",
        f"evaluate {run} (EMT probes + stdlib perplexity)",
        lambda here: eval_steps(options, model, here),
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
            "commands": [step.command for step in stage.steps(placeholder)],
            "depends": [keys[name] for name in stage.depends],
        },
        sort_keys=True,
    ).replace(str(out), "<out>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]
