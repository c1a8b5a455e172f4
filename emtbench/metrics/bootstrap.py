"""Confidence intervals for leaderboard numbers, from lm-eval's per-sample ``--log_samples`` files.

lm-eval writes one JSON line per evaluated document (``samples_<task>_<date>.jsonl``) carrying the
per-sample value of every metric (``"acc": 1.0``). Resampling those lines gives an interval for an
accuracy, and resampling several tasks independently gives one for a group's harmonic mean or Δ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import parse_json, read_text

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


def read_sample_scores(path: str | Path, metric: str = "acc", filter_name: str | None = None) -> np.ndarray:
    """Per-sample values of ``metric`` from one lm-eval samples jsonl file (one value per document).

    A task with several filters logs one line per document and filter; ``filter_name`` picks one
    (default: "none" when present, else the first filter name in sorted order). A line whose
    ``metrics`` list lacks ``metric`` is a document lm-eval did not score on it (an EMT answer the
    judge could not judge has no ``acc``) and is left out, as lm-eval leaves it out of the mean.
    Lines are read strictly: duplicate keys, NaN, a score outside [0, 1], or a document logged twice
    are named errors.
    """
    path = Path(path)
    fix = "pass the samples_*.jsonl files lm-eval wrote with --log_samples"
    text = read_text(path, what="samples file", fix=fix)
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    try:  # one C-level parse of the whole file is faster than a parse per line
        records = parse_json("[" + ",".join(line for _, line in numbered) + "]", str(path))
    except EmtbenchError:
        records = None  # parse line by line below to say which line is broken
    by_filter: dict[str, list[float]] = {}
    doc_ids: dict[str, list[tuple[object, int]]] = {}
    for index, (line_number, line) in enumerate(numbered):
        if records is not None:
            record = records[index]
        else:
            record = parse_json(line, f"{path}: line {line_number}", fix=fix)
        if record.__class__ is not dict:
            raise EmtbenchError(
                f"line {line_number} is not an lm-eval sample record (a JSON object)",
                where=str(path),
                fix=fix,
            )
        value = record.get(metric, _MISSING)
        if value is _MISSING:
            if isinstance(record.get("metrics"), list) and metric not in record["metrics"]:
                continue  # not scored on this metric (e.g. judge_error: no acc)
            raise EmtbenchError(
                f"line {line_number} is not an lm-eval sample with a {metric!r} value",
                where=str(path),
                fix=fix,
            )
        if value.__class__ not in (float, int):  # bool is not a score
            raise EmtbenchError(f"line {line_number}: {metric!r} is not a number", where=str(path))
        if not 0.0 <= value <= 1.0:
            raise EmtbenchError(
                f"line {line_number}: {metric!r} = {value} is not a score in [0, 1]", where=str(path)
            )
        filter_key = record.get("filter", "none")
        scores = by_filter.get(filter_key)
        if scores is None:
            if not isinstance(filter_key, str):
                raise EmtbenchError(
                    f"line {line_number}: filter {filter_key!r} is not a name", where=str(path), fix=fix
                )
            scores = by_filter[filter_key] = []
            doc_ids[filter_key] = []
        scores.append(value)
        doc_ids[filter_key].append((record.get("doc_id"), line_number))
    for filter_key, logged in doc_ids.items():
        _check_logged_once(logged, filter_key, path)
    if not by_filter:
        raise EmtbenchError("samples file holds no scored samples", where=str(path))
    if filter_name is None:
        filter_name = "none" if "none" in by_filter else sorted(by_filter)[0]
    if filter_name not in by_filter:
        raise EmtbenchError(
            f"no samples for filter {filter_name!r} (found {sorted(by_filter)})", where=str(path)
        )
    return np.asarray(by_filter[filter_name], dtype=float)


_MISSING = object()


def _check_logged_once(logged: list[tuple[object, int]], filter_key: str, path: Path) -> None:
    """Each document once per filter: a file appended to itself (or to another run's) double-counts."""
    ids = [doc_id for doc_id, _ in logged if doc_id is not None]
    try:
        unique = len(set(ids)) == len(ids)
    except TypeError:  # an unhashable doc_id (a list): compare by their JSON text
        unique = len({json.dumps(i, sort_keys=True) for i in ids}) == len(ids)
    if unique:
        return
    seen: set[str] = set()
    for doc_id, line_number in logged:
        key = json.dumps(doc_id, sort_keys=True)
        if doc_id is not None and key in seen:
            raise EmtbenchError(
                f"line {line_number}: document {doc_id!r} is logged twice for filter {filter_key!r}",
                where=str(path),
                fix="pass the samples file of one run (files appended to each other double-count)",
            )
        seen.add(key)


def resampled_means(
    scores: Sequence[float] | np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Accuracies (in %) of ``resamples`` bootstrap resamples of one task's per-sample scores.

    Per-sample scores take few distinct values (0/1, or VQA's soft 0, 1/3, 2/3, 1), and a bootstrap
    resample is fully described by how many times each value was drawn: a multinomial draw. That is
    the same distribution as resampling the n samples (what scipy.stats.bootstrap does) at O(k) instead
    of O(n) per resample, which keeps a 1,000-run leaderboard with 10,000-sample tasks fast.
    """
    scores = np.asarray(scores, dtype=float).ravel()
    if scores.size == 0:
        raise EmtbenchError("cannot bootstrap zero samples")
    values, counts = np.unique(scores, return_counts=True)
    draws = rng.multinomial(scores.size, counts / scores.size, size=resamples)
    return 100.0 * (draws @ values) / scores.size


def harmonic_rows(accuracies: np.ndarray) -> np.ndarray:
    """Harmonic mean of each row of a (resamples, tasks) array of accuracies; 0 where any is 0."""
    with np.errstate(divide="ignore"):
        result = accuracies.shape[1] / np.sum(1.0 / accuracies, axis=1)
    return np.where(np.any(accuracies <= 0, axis=1), 0.0, result)


def bootstrap_statistic_ci(
    samples: Sequence[Sequence[float] | np.ndarray],
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over tasks, each task resampled independently.

    ``statistic`` maps a (resamples, tasks) array of resampled accuracies (%) to one value per resample.
    Tasks are separate test sets, hence independent resampling. The seed is fixed so the same input
    always gives the same interval (deterministic leaderboard builds).
    """
    if not samples:
        raise EmtbenchError("cannot bootstrap an empty set of tasks")
    rng = np.random.default_rng(seed)
    accuracies = np.stack([resampled_means(task, resamples, rng) for task in samples], axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(statistic(accuracies), [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ci(scores: Sequence[float] | np.ndarray, **options) -> tuple[float, float]:
    """Interval (in %) of one task's accuracy from its per-sample scores."""
    return bootstrap_statistic_ci([scores], lambda accuracies: accuracies[:, 0], **options)


def group_score_ci(samples: Sequence[Sequence[float] | np.ndarray], **options) -> tuple[float, float]:
    """Interval (in %) of ω, the harmonic mean of a task group's accuracies."""
    return bootstrap_statistic_ci(samples, harmonic_rows, **options)


def delta_ci(
    before: Sequence[Sequence[float] | np.ndarray], after: Sequence[Sequence[float] | np.ndarray], **options
) -> tuple[float, float]:
    """Interval (in points) of Δ = ω(before) − ω(after), every task of both models resampled independently."""
    split = len(before)
    return bootstrap_statistic_ci(
        [*before, *after],
        lambda acc: harmonic_rows(acc[:, :split]) - harmonic_rows(acc[:, split:]),
        **options,
    )
