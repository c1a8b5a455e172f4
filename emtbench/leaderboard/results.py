"""Read what lm-eval wrote: accuracies from ``results_*.json``, per-sample scores from ``samples_*.jsonl``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from emtbench.core.errors import EmtbenchError

# Preferred accuracy-like metric per task, in order; a manifest's `metrics:` overrides per task.
METRIC_PREFERENCE = ("acc", "exact_match", "accuracy")
PREFERRED_FILTER = "none"


@dataclass
class RunResults:
    """One run's accuracies in %, the metric each came from, and its samples files per task."""

    path: Path
    accuracy: dict[str, float]
    metric: dict[str, str]
    samples: dict[str, Path] = field(default_factory=dict)


def find_results_file(path: Path) -> Path:
    """A results JSON, or the single ``results_*.json`` under an lm-eval ``--output_path`` folder."""
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.rglob("results_*.json"))
        if len(found) == 1:
            return found[0]
        if not found:
            raise EmtbenchError(
                "folder holds no lm-eval results_*.json", fix="run `emtbench eval --output_path`"
            )
        names = ", ".join(str(p.relative_to(path)) for p in found[:4])
        raise EmtbenchError(
            f"folder holds {len(found)} results files ({names})", fix="name one file in `results:`"
        )
    raise EmtbenchError(
        "file not found", fix="check the path (relative paths start at the manifest's folder)"
    )


def _pick_metric(task: str, values: dict, wanted: str | None) -> tuple[str, float]:
    names = [wanted] if wanted else list(METRIC_PREFERENCE)
    for name in names:
        keys = [key for key in values if key.split(",")[0] == name]
        keys.sort(key=lambda key: (key != f"{name},{PREFERRED_FILTER}", key))
        for key in keys:
            value = values[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return key, float(value)
    found = sorted({key.split(",")[0] for key in values if "," in key and "_stderr" not in key})
    raise EmtbenchError(
        f"task {task!r} has no {' / '.join(names)} metric (it has: {', '.join(found) or 'none'})",
        fix=f"set `metrics: {{{task}: METRIC}}` in the manifest",
    )


def read_results(path: Path, metric_overrides: dict[str, str]) -> RunResults:
    """Accuracies (in %) of every task in an lm-eval results file; group aggregates are left out."""
    path = find_results_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise EmtbenchError(f"cannot read results file ({error})") from None
    except json.JSONDecodeError as error:
        raise EmtbenchError(f"not valid JSON: {error}", fix="pass the results_*.json lm-eval wrote") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or not data["results"]:
        raise EmtbenchError("no `results` mapping of tasks", fix="pass the results_*.json lm-eval wrote")
    group_names = set(data.get("group_subtasks") or {}) | set(data.get("groups") or {})
    accuracy: dict[str, float] = {}
    metric: dict[str, str] = {}
    for task, values in data["results"].items():
        if task in group_names:
            continue
        if not isinstance(values, dict):
            raise EmtbenchError(f"results.{task} is not a mapping of metrics")
        key, value = _pick_metric(task, values, metric_overrides.get(task))
        if not 0.0 <= value <= 1.0:
            raise EmtbenchError(f"results.{task}.{key} = {value} is not an accuracy in [0, 1]")
        accuracy[task] = 100.0 * value
        metric[task] = key
    return RunResults(path, accuracy, metric, discover_samples(path, set(accuracy)))


def sample_file_task(path: Path) -> str | None:
    """``samples_<task>_<date>.jsonl`` → task (lm-eval's dates hold no underscore)."""
    name = path.name
    if not (name.startswith("samples_") and name.endswith(".jsonl")) or name.count("_") < 2:
        return None
    return name[len("samples_") : -len(".jsonl")].rsplit("_", 1)[0]


def discover_samples(results_path: Path, tasks: set[str]) -> dict[str, Path]:
    """Samples files lm-eval wrote next to a results file in the same run (same date suffix)."""
    stamp = (
        results_path.name[len("results_") : -len(".json")] if results_path.name.startswith("results_") else ""
    )
    if not stamp:
        return {}
    found = {}
    for candidate in sorted(results_path.parent.glob(f"samples_*_{stamp}.jsonl")):
        task = sample_file_task(candidate)
        if task in tasks:
            found[task] = candidate
    return found
