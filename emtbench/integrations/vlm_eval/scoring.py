"""Score vlm-evaluation's EMT generations with emtbench's judges and write lm-eval-shaped results.

The judging is the lm-eval tasks' own: one :class:`~emtbench.judges.base.Judge` built from the same
``--metadata`` keys, one batch of unique (label, answer) pairs, the same per-sample metrics
(:func:`~emtbench.judges.base.scores`), aggregated with lm-eval's ``mean`` and ``mean_stderr``. The
output is what ``emtbench eval --output_path ... --log_samples`` writes for the task (a
``results_<date>.json`` and a ``samples_<task>_<date>.jsonl``), so ``emtbench leaderboard build``
and the bootstrap intervals read either harness's results the same way.

Nothing here imports vlm-evaluation or torch.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.datasets.emt import get_dataset
from emtbench.judges.base import METRIC_NAMES, JudgeItem, Judgement, make_judge, scores

HARNESS = "vlm-evaluation"


@dataclass(frozen=True)
class ScoredSample:
    example: dict[str, Any]
    """The index example (``example_id``, ``label``, ``img_path``, ...)."""
    answer: str
    judgement: Judgement

    @property
    def metrics(self) -> dict[str, float]:
        return scores(self.judgement)


def judge_generations(
    task: str, examples: Sequence[Mapping[str, Any]], answers: Sequence[str], judge: Mapping[str, Any]
) -> list[ScoredSample]:
    """Verdicts for each (example, answer), judged as the lm-eval task's filter judges them."""
    if len(examples) != len(answers):
        raise EmtbenchError(f"{len(examples)} examples but {len(answers)} answers", where=task)
    dataset = get_dataset(task)
    unique: dict[tuple[int, str], JudgeItem] = {}
    for example, answer in zip(examples, answers, strict=True):
        key = (int(example["label"]), answer)
        if key not in unique:
            unique[key] = JudgeItem(
                answer=answer, label=dataset.labels[key[0]], labels=dataset.labels, kind=dataset.kind
            )
    verdicts = dict(zip(unique, make_judge(dict(judge)).judge(list(unique.values())), strict=True))
    return [
        ScoredSample(dict(example), answer, verdicts[(int(example["label"]), answer)])
        for example, answer in zip(examples, answers, strict=True)
    ]


def summarise(samples: Sequence[ScoredSample]) -> dict[str, float | str]:
    """``acc,none`` / ``acc_stderr,none`` and each verdict rate, aggregated as lm-eval aggregates them."""
    from lm_eval.api.metrics import mean, mean_stderr

    summary: dict[str, float | str] = {}
    for name in METRIC_NAMES:
        values = [sample.metrics[name] for sample in samples]
        summary[f"{name},none"] = mean(values)
        summary[f"{name}_stderr,none"] = mean_stderr(values) if len(values) > 1 else "N/A"
    return summary


def lm_eval_date() -> str:
    """lm-eval's file-name timestamp (``2025-01-31T12-00-00.123456``: no underscore, no colon)."""
    return datetime.now().isoformat().replace(":", "-")


def _sample_record(task: str, sample: ScoredSample, prompt: str) -> dict[str, Any]:
    example = sample.example
    dataset = get_dataset(task)
    record: dict[str, Any] = {
        "doc_id": int(example["example_id"]),
        "doc": {
            "label": int(example["label"]),
            "emt_task": task,
            "row": example.get("row"),
            "img_path": example.get("img_path"),
        },
        "target": dataset.labels[int(example["label"])],
        "arguments": {"gen_args_0": {"arg_0": prompt}},
        "resps": [[sample.answer]],
        "filtered_resps": [sample.answer],
        "filter": "none",
        "metrics": list(METRIC_NAMES),
        "verdict": sample.judgement.verdict.value,
        "matched": list(sample.judgement.matched),
    }
    record.update(sample.metrics)
    return record


def write_lm_eval_results(
    output_dir: str | Path,
    task: str,
    samples: Sequence[ScoredSample],
    *,
    model: str,
    metadata: Mapping[str, Any],
    prompts: Sequence[str] | None = None,
    date: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``results_<date>.json`` and ``samples_<task>_<date>.jsonl`` into ``output_dir``."""
    if not samples:
        raise EmtbenchError("no samples to write", where=task, fix="evaluate at least one example")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    date = date or lm_eval_date()
    dataset = get_dataset(task)
    prompts = prompts or [dataset.prompt] * len(samples)
    samples_path = output_dir / f"samples_{task}_{date}.jsonl"
    lines = [
        json.dumps(_sample_record(task, s, p), ensure_ascii=False)
        for s, p in zip(samples, prompts, strict=True)
    ]
    _write_atomically(samples_path, "\n".join(lines) + "\n")
    results = {
        "results": {task: {"name": task, "alias": task, "sample_len": len(samples), **summarise(samples)}},
        "group_subtasks": {},
        "configs": {
            task: {
                "task": task,
                "dataset_kwargs": {"emt_dataset": dataset.name},
                "output_type": "generate_until",
                "metadata": {"version": 1.0, **dict(metadata)},
            }
        },
        "versions": {task: 1.0},
        "n-shot": {task: 0},
        "higher_is_better": {task: {name: name == "acc" for name in METRIC_NAMES}},
        "n-samples": {task: {"original": len(samples), "effective": len(samples)}},
        "config": {"model": model, "model_args": None, "batch_size": None, "limit": None},
        "date": date,
        "emtbench": {"harness": HARNESS, **dict(extra or {})},
    }
    results_path = output_dir / f"results_{date}.json"
    _write_atomically(results_path, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return results_path


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def collect_results(result_files: Sequence[str | Path], output_dir: str | Path) -> Path:
    """Merge one model's per-dataset results into one lm-eval results folder for the leaderboard.

    vlm-evaluation keeps one folder per (dataset, model); a leaderboard run entry names one results
    file, so the tasks of one model are joined under a fresh date, each samples file copied beside it.
    """
    from emtbench.leaderboard.results import discover_samples

    merged: dict[str, Any] | None = None
    copies: list[tuple[Path, str]] = []
    seen: dict[str, Path] = {}
    for value in result_files:
        path = Path(value)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            tasks = list(data["results"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise EmtbenchError(f"not an lm-eval results file ({error})", where=str(path)) from None
        for task in tasks:
            if task in seen:
                raise EmtbenchError(
                    f"{task} appears in both {seen[task]} and {path}",
                    where="collect",
                    fix="collect one subset per task (pass the result files or --datasets to choose)",
                )
            seen[task] = path
        samples = discover_samples(path, set(tasks))
        copies.extend((sample_path, task) for task, sample_path in samples.items())
        if merged is None:
            merged = data
            merged["emtbench"] = {"harness": HARNESS, "collected_from": [str(path)]}
            continue
        for key in (
            "results",
            "configs",
            "versions",
            "n-shot",
            "higher_is_better",
            "n-samples",
            "group_subtasks",
        ):
            merged.setdefault(key, {}).update(data.get(key) or {})
        merged["emtbench"]["collected_from"].append(str(path))
    if merged is None:
        raise EmtbenchError(
            "no results files to collect", fix="score the EMT datasets first (scripts/score.py)"
        )
    date = lm_eval_date()
    merged["date"] = date
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for old in [*output_dir.glob("results_*.json"), *output_dir.glob("samples_*.jsonl")]:
        old.unlink()  # one results file per folder: the leaderboard reads the folder
    for sample_path, task in copies:
        shutil.copyfile(sample_path, output_dir / f"samples_{task}_{date}.jsonl")
    results_path = output_dir / f"results_{date}.json"
    _write_atomically(results_path, json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    return results_path


def find_model_results(
    results_dir: str | Path, model_id: str, dataset_ids: Sequence[str] | None = None
) -> list[Path]:
    """The lm-eval results file of each scored EMT dataset of one model under vlm-evaluation's results_dir."""
    from emtbench.integrations.vlm_eval.variants import FAMILY_PREFIX

    root = Path(results_dir)
    found: list[Path] = []
    for folder in sorted(root.glob(f"{FAMILY_PREFIX}*/*/{model_id}")):
        if dataset_ids is not None and folder.parent.name not in dataset_ids:
            continue
        files = sorted(folder.glob("results_*.json"))
        if len(files) > 1:
            raise EmtbenchError(
                f"{len(files)} results files in one folder", where=str(folder), fix="keep the newest"
            )
        found.extend(files)
    if dataset_ids is not None:
        missing = sorted(set(dataset_ids) - {path.parent.parent.name for path in found})
        if missing:
            raise EmtbenchError(
                f"no scored results for {', '.join(missing)}",
                where=str(root),
                fix="run scripts/score.py for them (through `emtbench vlm-eval run`)",
            )
    if not found:
        raise EmtbenchError(
            f"no scored EMT datasets for model {model_id!r}",
            where=str(root),
            fix="run vlm-evaluation's scripts/score.py (through `emtbench vlm-eval run`) first",
        )
    return found
