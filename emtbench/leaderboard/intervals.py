"""Every bootstrap interval of a leaderboard, task by task: one resampling per task for all of its runs.

For each task, the per-document scores of every run that logged samples are put in ``doc_id`` order and
stacked as the columns of one matrix; one count matrix of resamples (:func:`resample_counts`, seeded by
``task_seed(seed, task)``) times that matrix gives every run's resampled accuracies at once. From them:

- ``accuracy_ci`` of a run: the percentile interval of its own column;
- ``forgetting_ci`` of a run on a task: the interval of base column − run column. Both columns come from
  the SAME draw of document indices (the base and the run scored the same documents), so the interval is
  paired. A run whose documents differ from its base's (a different ``--limit``, judge errors on one side)
  is paired on the shared documents only, and that is listed in ``Leaderboard.pairing``;
- ``delta_ci`` of a group: ω(base) − ω(run) per resample, each task's base and run resampled jointly and
  separate tasks independently. Where a task's samples carry no ``doc_id`` the group falls back to the
  independent interval (:func:`delta_ci`) and is listed in ``Row.delta_ci_independent``.

The numbers are those of the public functions: a run's ``forgetting_ci`` on task t equals
``paired_delta_ci(base, run, seed=task_seed(seed, t))`` on the two score vectors in doc_id order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emtbench.core.errors import EmtbenchError
from emtbench.metrics import (
    SampleScores,
    align_by_doc_id,
    delta_ci,
    paired_delta_ci,
    paired_group_delta_ci,
    resample_counts,
    task_seed,
)
from emtbench.metrics.bootstrap import percentile_interval

if TYPE_CHECKING:
    from emtbench.leaderboard.build import Leaderboard, Problem, Row

NL_GROUP = "NL"
NL_PARTS = ("NLU", "NLG")


@dataclass
class _Column:
    """One run's scores on one task, in doc_id order, and where its resampled accuracies are."""

    scores: np.ndarray
    keys: np.ndarray | None  # sorted doc_ids (int64, or JSON text), None when some line has none
    samples: SampleScores
    block: int = -1  # which resampled block (one per document count n)
    column: int = -1


def _column(samples: SampleScores) -> _Column:
    ids = samples.doc_ids
    if ids.dtype == np.int64:
        order = np.argsort(ids, kind="stable")
        return _Column(samples.scores[order], ids[order], samples)
    if any(doc_id is None for doc_id in ids):
        return _Column(samples.scores, None, samples)
    text = [doc_id if doc_id.__class__ is str else json.dumps(doc_id, sort_keys=True) for doc_id in ids]
    order = np.asarray(sorted(range(len(text)), key=text.__getitem__), dtype=np.intp)
    keys = np.empty(len(text), dtype=object)
    keys[:] = [text[i] for i in order]
    return _Column(samples.scores[order], keys, samples)


def _same_documents(first: _Column, second: _Column) -> bool:
    return first.keys is not None and second.keys is not None and np.array_equal(first.keys, second.keys)


class _TaskResamples:
    """Resampled accuracies (%) of every run on one task: blocks of shape (runs, resamples), one per n.

    Runs are rows, so each run's resamples are contiguous for the percentile and the row gathers.
    """

    def __init__(self, task: str, columns: dict[str, _Column], resamples: int, seed: int) -> None:
        self.columns = columns
        by_size: dict[int, list[str]] = {}
        for name, column in columns.items():
            by_size.setdefault(column.scores.size, []).append(name)
        self.blocks: list[np.ndarray] = []
        for n, names in by_size.items():
            counts = resample_counts(n, resamples, task_seed(seed, task))
            scores = np.stack([columns[name].scores for name in names])
            self.blocks.append(scores @ counts.T * 100.0 / n)
            for index, name in enumerate(names):
                columns[name].block, columns[name].column = len(self.blocks) - 1, index

    def of(self, names: list[str]) -> np.ndarray:
        """(len(names), resamples) resampled accuracies of the named runs."""
        first = self.columns[names[0]].block
        if all(self.columns[name].block == first for name in names):
            return self.blocks[first][[self.columns[name].column for name in names]]
        return np.stack([self.blocks[self.columns[n].block][self.columns[n].column] for n in names])


def _harmonic(stack: list[np.ndarray]) -> np.ndarray:
    """Harmonic mean over a list of (runs, resamples) accuracy arrays; 0 where any accuracy is 0."""
    inverse = np.zeros_like(stack[0])
    zero = np.zeros(stack[0].shape, dtype=bool)
    with np.errstate(divide="ignore"):
        for accuracies in stack:
            inverse += 1.0 / accuracies
            zero |= accuracies <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(zero, 0.0, len(stack) / inverse)


def _pairs(lows_highs: np.ndarray) -> list[tuple[float, float]]:
    return [(float(low), float(high)) for low, high in lows_highs.T.tolist()]


def compute_intervals(
    loaded: Mapping[str, tuple[Row, dict[str, SampleScores]]],
    bases: Mapping[str, str],
    lb: Leaderboard,
    options: Mapping[str, Any],
    wheres: Mapping[str, str],
) -> list[Problem]:
    """Fill ``ci``, ``forgetting_ci`` and ``delta_ci`` of every row; return the pairing notes."""
    from emtbench.leaderboard.build import Problem

    resamples, confidence, seed = options["resamples"], options["confidence"], options["seed"]
    notes: list[Problem] = []
    rows = {name: found[0] for name, found in loaded.items()}
    by_task: dict[str, dict[str, _Column]] = {}
    for name, (_, scores) in loaded.items():
        for task, samples in scores.items():
            by_task.setdefault(task, {})[name] = _column(samples)
    # Which (run, task) pairs are paired on identical documents: their columns share one draw.
    fast: dict[str, set[str]] = {}
    for task, columns in by_task.items():
        for name, column in columns.items():
            base = bases.get(name)
            if base in columns and _same_documents(column, columns[base]):
                fast.setdefault(task, set()).add(name)
    needed = {}  # group tasks still to use a task's resamples, so finished tasks can be released
    grouped = [task for datasets in lb.groups.values() for task in datasets if task in by_task]
    for task in grouped:
        needed[task] = needed.get(task, 0) + 1
    resampled: dict[str, _TaskResamples] = {}
    done: set[str] = set()

    def task_resamples(task: str) -> _TaskResamples:
        if task not in resampled:
            if task in done:
                raise AssertionError(f"{task} resampled twice")  # released while a group needed it
            found = resampled[task] = _TaskResamples(task, by_task[task], resamples, seed)
            _task_intervals(task, found)
            done.add(task)
        return resampled[task]

    def _task_intervals(task: str, found: _TaskResamples) -> None:
        names = list(found.columns)
        for name, pair in zip(
            names, _pairs(percentile_interval(found.of(names), confidence, axis=1)), strict=True
        ):
            rows[name].ci[task] = pair
        paired = sorted(fast.get(task, ()))
        if paired:
            difference = found.of([bases[name] for name in paired]) - found.of(paired)
            for name, pair in zip(
                paired, _pairs(percentile_interval(difference, confidence, axis=1)), strict=True
            ):
                rows[name].forgetting_ci[task] = pair
        for name in names:
            base = bases.get(name)
            if base is None or base not in found.columns or name in fast.get(task, ()):
                continue
            pair = _slow_pair(task, found.columns[base], found.columns[name], name, base)
            if pair is not None:
                base_scores, run_scores = pair
                rows[name].forgetting_ci[task] = paired_delta_ci(
                    base_scores,
                    run_scores,
                    resamples=resamples,
                    confidence=confidence,
                    seed=task_seed(seed, task),
                )

    def _slow_pair(
        task: str, base: _Column, run: _Column, name: str, base_name: str
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Base and run on the documents both were scored on (noted), or None (noted) if there are none."""
        where = f"{wheres.get(name, name)} ({name}) {task}"
        try:
            if base.keys is None or run.keys is None:
                raise EmtbenchError("a samples file carries no doc_id")
            alignment = align_by_doc_id(base.keys.tolist(), run.keys.tolist(), drop_unmatched=True)
        except EmtbenchError as error:
            notes.append(
                Problem(where, f"cannot pair with base {base_name!r}: {error.problem}", "no forgetting_ci")
            )
            return None
        notes.append(
            Problem(
                where,
                f"{alignment.base_only} document(s) scored only for base {base_name!r} and "
                f"{alignment.run_only} only for this run",
                f"forgetting_ci and the group Δ intervals pair the {alignment.shared} shared documents",
            )
        )
        return alignment.apply(base.scores, run.scores)

    group_draws: dict[str, dict[str, np.ndarray]] = {}  # NLU/NLG resampled Δ for the NL interval
    for group, datasets in lb.groups.items():
        for task in datasets:
            if task in by_task:
                task_resamples(task)  # every run's accuracy and forgetting intervals on it
        candidates = [name for name in rows if name in bases and group in rows[name].delta]
        if not datasets or not candidates or not all(task in by_task for task in datasets):
            _release(datasets, needed, resampled)
            continue
        quick = [name for name in candidates if all(name in fast.get(task, ()) for task in datasets)]
        if quick:
            base_names = [bases[name] for name in quick]
            base_acc = [task_resamples(task).of(base_names) for task in datasets]
            run_acc = [task_resamples(task).of(quick) for task in datasets]
            difference = _harmonic(base_acc) - _harmonic(run_acc)
            if group in NL_PARTS:
                group_draws[group] = dict(zip(quick, difference, strict=True))
            for name, pair in zip(
                quick, _pairs(percentile_interval(difference, confidence, axis=1)), strict=True
            ):
                rows[name].delta_ci[group] = pair
        for name in candidates:
            if name in quick:
                continue
            base = bases[name]
            if not all(name in by_task[t] and base in by_task[t] for t in datasets):
                continue  # a task without samples on one side: no interval, as before
            pairs = []
            for task in datasets:
                run_column, base_column = by_task[task][name], by_task[task][base]
                if base_column.keys is None or run_column.keys is None:
                    pairs = None
                    break
                alignment = align_by_doc_id(
                    base_column.keys.tolist(), run_column.keys.tolist(), drop_unmatched=True
                )
                pairs.append(alignment.apply(base_column.scores, run_column.scores))
            common = {"resamples": resamples, "confidence": confidence}
            if pairs is None:
                rows[name].delta_ci[group] = delta_ci(
                    [by_task[t][base].scores for t in datasets],
                    [by_task[t][name].scores for t in datasets],
                    seed=seed,
                    **common,
                )
                rows[name].delta_ci_independent.add(group)
            else:
                rows[name].delta_ci[group] = paired_group_delta_ci(
                    pairs, seeds=[task_seed(seed, task) for task in datasets], **common
                )
        _release(datasets, needed, resampled)
    for task in sorted(set(by_task) - done):  # tasks in no group
        task_resamples(task)
        resampled.pop(task)
    if all(part in group_draws for part in NL_PARTS):
        both = [name for name in group_draws[NL_PARTS[0]] if name in group_draws[NL_PARTS[1]]]
        if both:
            mean_draws = np.stack(
                [(group_draws[NL_PARTS[0]][name] + group_draws[NL_PARTS[1]][name]) / 2 for name in both]
            )
            intervals = percentile_interval(mean_draws, confidence, axis=1)
            for name, pair in zip(both, _pairs(intervals), strict=True):
                rows[name].delta_ci[NL_GROUP] = pair
    return notes


def _release(datasets: list[str], needed: dict[str, int], resampled: dict[str, _TaskResamples]) -> None:
    """Forget a task's resampled accuracies once no later group needs them (bounded memory)."""
    for task in datasets:
        if task in needed:
            needed[task] -= 1
            if needed[task] == 0:
                resampled.pop(task, None)
