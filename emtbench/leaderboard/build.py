"""Turn a manifest into leaderboard rows: load every run, compute the forgetting metrics, list problems.

Nothing is dropped silently: each problem names the manifest entry and field (or the file) and what was
left out because of it. The caller refuses to write anything when there are problems, unless the user
asked for a partial build.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import read_json
from emtbench.leaderboard.intervals import compute_intervals
from emtbench.leaderboard.manifest import BASE_METHODS, Manifest, RunEntry, default_groups, load_manifest
from emtbench.leaderboard.results import RunResults, read_results, sample_file_task
from emtbench.metrics import (
    AccuracyMatrix,
    SampleScores,
    delta,
    group_score,
    mean,
    read_samples,
    tailor_scores,
)

NL_GROUP = "NL"
NL_PARTS = ("NLU", "NLG")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, and what the build leaves out because of it."""

    where: str
    message: str
    consequence: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message} — {self.consequence}"


@dataclass
class Row:
    """Everything the page, JSON and CSV show for one run (accuracies and scores in %)."""

    entry: RunEntry
    accuracy: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    delta_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Interval of each group's Δ: paired (same documents resampled jointly) unless in ``delta_ci_independent``."""
    delta_ci_independent: set[str] = field(default_factory=set)
    """Groups whose Δ interval resampled base and run independently (their samples carry no shared doc_ids)."""
    forgetting: dict[str, float] = field(default_factory=dict)
    forgetting_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Paired interval of each task's forgetting (base − run, points), the base's documents resampled jointly."""
    original: float | None = None
    target: float | None = None
    h_score: float | None = None
    average: float | None = None
    params_changed: float | None = None
    encoder_gap: float | None = None
    continual: AccuracyMatrix | None = None
    bwt: float | None = None
    continual_forgetting: float | None = None
    coverage: dict[str, float] = field(default_factory=dict)
    """Share of answers the judge could judge, per judged task, in [0, 1]."""
    low_coverage: list[str] = field(default_factory=list)
    """Tasks whose coverage is below the manifest's ``min_judge_coverage`` (flagged on the page)."""


@dataclass
class Leaderboard:
    title: str
    description: str | None
    groups: dict[str, list[str]]
    tasks: list[str]
    rows: list[Row]
    problems: list[Problem]
    flags: list[Problem] = field(default_factory=list)
    """What is shown but should be read with care (low judge coverage); never blocks a build."""
    pairing: list[Problem] = field(default_factory=list)
    """Paired intervals over part of the documents, or none (base and run scored different documents)."""
    min_judge_coverage: float = 0.95

    @property
    def delta_groups(self) -> list[str]:
        names = list(self.groups)
        if all(part in self.groups for part in NL_PARTS):
            names.insert(names.index(NL_PARTS[1]) + 1, NL_GROUP)
        return names


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, where: str, message: str, consequence: str) -> None:
        self.problems.append(Problem(where, message, consequence))


def describe(error: EmtbenchError) -> str:
    """One line for a problem list: what went wrong, then how to fix it."""
    text = error.problem if error.where is None else f"{error.where}: {error.problem}"
    return f"{text} (fix: {error.fix})" if error.fix else text


def _where(manifest_path: Path, index: int, field_name: str | None = None) -> str:
    return f"{manifest_path}: runs[{index}]" + (f".{field_name}" if field_name else "")


def _resolve(manifest_path: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else manifest_path.parent / path


def _load_samples(
    entry: RunEntry, results: RunResults, manifest_path: Path, where: str, issues: _Collector
) -> None:
    """Explicit ``samples:`` files replace the ones found next to the results file."""
    if entry.samples is None:
        return
    results.samples = {}
    for value in entry.samples:
        path = _resolve(manifest_path, value)
        task = sample_file_task(path)
        if task is None or task not in results.accuracy:
            issues.add(
                where, f"{value}: not a samples_<task>_<date>.jsonl file of a task in the results", "ignored"
            )
        elif not path.is_file():
            issues.add(where, f"{value}: file not found", f"no interval for {task}")
        else:
            results.samples[task] = path


def _sample_scores(row: Row, results: RunResults, where: str, issues: _Collector) -> dict[str, SampleScores]:
    scores = {}
    for task, path in sorted(results.samples.items()):
        metric = results.metric[task].split(",")[0]
        filter_name = results.metric[task].split(",", 1)[1] if "," in results.metric[task] else None
        try:
            task_scores = read_samples(path, metric, filter_name)
        except EmtbenchError as error:
            issues.add(where, describe(error), f"no interval for {task}")
            continue
        disagreement = _disagreement(task, task_scores, results)
        if disagreement:
            issues.add(where, f"{path}: {disagreement}", f"no interval for {task}")
            continue
        scores[task] = task_scores
    return scores


def _disagreement(task: str, samples: SampleScores, results: RunResults) -> str | None:
    """Why a samples file does not describe the run its results file reports, or None if it does."""
    task_scores = samples.scores
    count = results.counts.get(task)
    if count is not None:
        expected = round(count * results.coverage.get(task, 1.0))  # judge errors carry no score
        if expected != len(task_scores):
            return f"holds {len(task_scores)} scored samples of {task} but the results file counts {expected}"
    mean = 100.0 * float(task_scores.mean())
    if not math.isclose(mean, results.accuracy[task], rel_tol=1e-9, abs_tol=1e-6):
        return (
            f"its samples average {mean:.4f}% on {task} but the results file reports "
            f"{results.accuracy[task]:.4f}% (samples of another run?)"
        )
    return None


def _params_changed(entry: RunEntry, manifest_path: Path, where: str, issues: _Collector) -> float | None:
    if entry.params_changed is not None or entry.run_record is None:
        return entry.params_changed
    path = _resolve(manifest_path, entry.run_record)
    try:
        record = read_json(path, what="run record")
    except EmtbenchError as error:
        issues.add(f"{where}.run_record", describe(error), "parameters changed left empty")
        return None
    if not isinstance(record, dict):
        issues.add(
            f"{where}.run_record", f"{path}: not an emtbench_run.json object", "parameters changed left empty"
        )
        return None
    parameters = record.get("parameters")
    if not isinstance(parameters, dict | None):
        issues.add(
            f"{where}.run_record", f"{path}: `parameters` is not a mapping", "parameters changed left empty"
        )
        return None
    value = (parameters or {}).get("changed_fraction")
    if value is None:
        return None  # the record simply does not say; nothing is wrong
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        issues.add(
            f"{where}.run_record",
            f"{path}: parameters.changed_fraction={value!r} is not a fraction",
            "left empty",
        )
        return None
    return float(value)


def _continual(entry: RunEntry, row: Row, manifest_path: Path, where: str, issues: _Collector) -> None:
    if entry.accuracy_matrix is None:
        return
    path = _resolve(manifest_path, entry.accuracy_matrix)
    try:
        matrix = AccuracyMatrix.from_dict(read_json(path, what="accuracy matrix"))
    except EmtbenchError as error:
        issues.add(
            f"{where}.accuracy_matrix", f"{path}: {error}".replace("\n", " "), "no heatmap, BWT or forgetting"
        )
        return
    row.continual = matrix
    row.bwt = matrix.backward_transfer()
    row.continual_forgetting = matrix.forgetting()


def _load_row(
    index: int, entry: RunEntry, manifest: Manifest, manifest_path: Path, issues: _Collector
) -> tuple[Row, dict[str, SampleScores]] | None:
    where = _where(manifest_path, index)
    try:
        results = read_results(_resolve(manifest_path, entry.results), manifest.metrics)
    except EmtbenchError as error:
        issues.add(
            f"{where}.results ({_resolve(manifest_path, entry.results)})",
            describe(error),
            f"run {entry.name!r} skipped",
        )
        return None
    row = Row(entry, results.accuracy, coverage=dict(results.coverage))
    for task in results.unjudged:
        issues.add(
            f"{where}.results ({results.path})",
            f"the judge could judge none of the answers of {task} (judge_coverage 0)",
            "its cell is empty; rerun `emtbench eval` once the judge is reachable (judged verdicts are cached)",
        )
    threshold = manifest.min_judge_coverage
    row.low_coverage = [t for t, c in results.coverage.items() if t in results.accuracy and c < threshold]
    _load_samples(entry, results, manifest_path, where + ".samples", issues)
    scores = _sample_scores(row, results, where + ".samples", issues)
    row.params_changed = _params_changed(entry, manifest_path, where, issues)
    _continual(entry, row, manifest_path, where, issues)
    return row, scores


def _compare(
    row: Row,
    base: Row | None,
    lb: Leaderboard,
    manifest: Manifest,
    where: str,
    issues: _Collector,
) -> None:
    entry = row.entry
    declared = [*entry.target_tasks, *(entry.original_tasks or [])]
    for task in declared:
        if task not in row.accuracy:
            issues.add(
                f"{where}.target_tasks/original_tasks",
                f"task {task!r} is not in the run's results",
                "H-score and Avg left empty",
            )
    for task in manifest.tasks or []:
        if task not in row.accuracy:
            issues.add(
                f"{where}.results",
                f"task {task!r} (listed in the manifest's `tasks`) is missing",
                "its cell is empty",
            )
    if base is not None:
        missing = [task for task in base.accuracy if task not in row.accuracy]
        if missing:
            names = ", ".join(repr(task) for task in missing)
            issues.add(
                f"{where}.results",
                f"task(s) {names} were evaluated for base {base.entry.name!r} but are missing from this run",
                "their forgetting and the Δ of their groups are left empty",
            )
        for task, value in row.accuracy.items():
            if task in base.accuracy:
                row.forgetting[task] = base.accuracy[task] - value
        for group, datasets in lb.groups.items():
            if all(task in row.accuracy and task in base.accuracy for task in datasets):
                row.delta[group] = delta(base.accuracy, row.accuracy, datasets)
        if all(part in row.delta for part in NL_PARTS):
            row.delta[NL_GROUP] = mean(row.delta[part] for part in NL_PARTS)
    target = [task for task in entry.target_tasks if task in row.accuracy]
    original = (
        entry.original_tasks
        if entry.original_tasks is not None
        else [t for t in row.accuracy if t not in target]
    )
    original = [task for task in original if task in row.accuracy]
    if len(target) == len(entry.target_tasks) and all(t in row.accuracy for t in entry.original_tasks or []):
        if target and original:
            scores_ = tailor_scores(row.accuracy, original, target)
            row.original, row.target, row.h_score, row.average = (
                scores_.original,
                scores_.target,
                scores_.h_score,
                scores_.average,
            )
        elif original or target:
            row.average = mean(row.accuracy[t] for t in (*original, *target))


def _base_cycles(manifest: Manifest) -> dict[str, str]:
    """Runs on a cycle of ``base`` links (A's base is B, B's base is A), each with the cycle spelled out."""
    base_of = {}
    for entry in manifest.runs:
        base_of.setdefault(entry.name, entry.base)
    cycles: dict[str, str] = {}
    for start in base_of:
        chain = [start]
        current = base_of[start]
        while current is not None and current in base_of and current not in chain:
            chain.append(current)
            current = base_of[current]
        if current == start and len(chain) > 1:
            cycles[start] = " → ".join([*chain, start])
    return cycles


def order_tasks(groups: dict[str, list[str]], rows: list[Row], wanted: list[str] | None) -> list[str]:
    """Table columns: the manifest's list, else every evaluated task in group order, then the rest sorted."""
    if wanted:
        return list(dict.fromkeys(wanted))
    seen = {task for row in rows for task in row.accuracy}
    ordered = [task for datasets in groups.values() for task in datasets if task in seen]
    ordered = list(dict.fromkeys(ordered))
    return ordered + sorted(seen - set(ordered))


def load_leaderboard(manifest_path: str | Path, *, progress: bool = True) -> Leaderboard:
    """Load and score every run of a manifest; problems are collected, not raised."""
    manifest_path = Path(manifest_path)
    manifest = load_manifest(manifest_path)
    groups = {**default_groups(), **manifest.groups}
    issues = _Collector()
    rows: list[Row] = []
    loaded: dict[str, tuple[Row, dict[str, SampleScores]]] = {}
    first_index: dict[str, int] = {}
    for index, entry in enumerate(tqdm(manifest.runs, desc="reading runs", unit="run", disable=not progress)):
        if entry.name in first_index:
            issues.add(
                _where(manifest_path, index, "name"),
                f"two runs are named {entry.name!r} (first at runs[{first_index[entry.name]}])",
                "this second one skipped",
            )
            continue
        first_index[entry.name] = index
        found = _load_row(index, entry, manifest, manifest_path, issues)
        if found is not None:
            loaded[entry.name] = found
            rows.append(found[0])
    lb = Leaderboard(
        manifest.title,
        manifest.description,
        groups,
        [],
        rows,
        issues.problems,
        min_judge_coverage=manifest.min_judge_coverage,
    )
    in_cycle = _base_cycles(manifest)
    bases: dict[str, str] = {}
    for row in tqdm(rows, desc="scoring runs", unit="run", disable=not progress):
        entry = row.entry
        where = _where(manifest_path, first_index[entry.name])
        base = None
        if entry.base is not None:
            if entry.base == entry.name:
                issues.add(f"{where}.base", "a run cannot be its own base", "Δ and forgetting left empty")
            elif entry.name in in_cycle:
                issues.add(
                    f"{where}.base",
                    f"runs name each other as base ({in_cycle[entry.name]})",
                    "Δ and forgetting left empty",
                )
            elif entry.base not in loaded:
                reason = (
                    "was skipped (see above)" if entry.base in first_index else "is not a run in the manifest"
                )
                issues.add(f"{where}.base", f"base {entry.base!r} {reason}", "Δ and forgetting left empty")
            else:
                base = loaded[entry.base][0]
        elif entry.method not in BASE_METHODS:
            issues.add(
                f"{where}.base",
                f"method {entry.method!r} fine-tunes a model but the run names no `base`",
                "Δ and forgetting left empty",
            )
        if base is not None:
            bases[entry.name] = entry.base  # type: ignore[assignment]
        _compare(row, base, lb, manifest, where, issues)
        if entry.encoder is not None:
            encoder = loaded.get(entry.encoder)
            shared = [t for t in row.accuracy if encoder and t in encoder[0].accuracy]
            if not shared:
                issues.add(
                    f"{where}.encoder",
                    f"no results shared with encoder run {entry.encoder!r}",
                    "gap left empty",
                )
            else:
                row.encoder_gap = mean(encoder[0].accuracy[t] - row.accuracy[t] for t in shared)  # type: ignore[index]
    lb.tasks = order_tasks(groups, rows, manifest.tasks)
    wheres = {row.entry.name: _where(manifest_path, first_index[row.entry.name]) for row in rows}
    lb.pairing = compute_intervals(
        {name: found for name, found in loaded.items()}, bases, lb, manifest.bootstrap.model_dump(), wheres
    )
    for row in rows:
        for task in row.low_coverage:
            lb.flags.append(
                Problem(
                    f"{_where(manifest_path, first_index[row.entry.name])} ({row.entry.name}) {task}",
                    f"the judge could judge only {100 * row.coverage[task]:.1f}% of the answers "
                    f"(below {100 * manifest.min_judge_coverage:.0f}%)",
                    "its accuracy is over the judged answers only; rerun once the judge is reachable",
                )
            )
    for group, datasets in groups.items():  # unused groups stay valid; a group Δ needs all of its datasets
        if not datasets:
            issues.add(f"{manifest_path}: groups.{group}", "group has no datasets", "no Δ for it")
    return lb


def group_omega(row: Row, datasets: list[str]) -> float | None:
    """ω of a group for one row, when every dataset was evaluated (used by the JSON output)."""
    if not all(task in row.accuracy for task in datasets) or not datasets:
        return None
    return group_score(row.accuracy, datasets)
