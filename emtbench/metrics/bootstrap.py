"""Confidence intervals for leaderboard numbers, from lm-eval's per-sample ``--log_samples`` files.

lm-eval writes one JSON line per evaluated document (``samples_<task>_<date>.jsonl``) carrying the
per-sample value of every metric (``"acc": 1.0``) and the document's ``doc_id``. Resampling those lines
gives an interval for an accuracy, and resampling several tasks independently gives one for a group's
harmonic mean.

A difference between two models scored on the SAME documents (a base and its fine-tune: a task's
forgetting, a group's Δ) is paired: both models' scores are resampled with one draw of document indices
(:func:`paired_delta_ci`, :func:`paired_statistic_ci`), after aligning the two files by ``doc_id``
(:func:`align_by_doc_id`). Resampling the two models independently treats the shared documents as two
separate test sets and overstates the interval several-fold (SPEC §8, last bullet).

A bootstrap resample is one row of a count matrix (:func:`resample_counts`): how many times each of the
n documents was drawn. The resampled means of any number of per-document score vectors are then one
matrix product, so a leaderboard resamples a task once for all of its runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter, methodcaller
from pathlib import Path
from zlib import crc32

import numpy as np

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import parse_json, read_text

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95

Seed = int | Sequence[int]
"""A seed numpy's ``default_rng`` takes: an int, or a sequence of ints (e.g. ``task_seed(0, "emt_digits")``)."""

SIGNIFICANT_MARK = "*"
SIGNIFICANCE_LEGEND = (
    f"{SIGNIFICANT_MARK} = significant: the 95% paired bootstrap interval of the difference from the base "
    "(same images resampled jointly for both models) excludes 0"
)


@dataclass(frozen=True)
class SampleScores:
    """One task's per-document scores of one model, in file order, with each document's ``doc_id``."""

    scores: np.ndarray
    doc_ids: np.ndarray
    """int64 when every doc_id is an integer (lm-eval's case), else an object array (None where absent)."""

    def __len__(self) -> int:
        return int(self.scores.size)


def read_sample_scores(path: str | Path, metric: str = "acc", filter_name: str | None = None) -> np.ndarray:
    """Per-sample values of ``metric`` from one lm-eval samples jsonl file (one value per document).

    A task with several filters logs one line per document and filter; ``filter_name`` picks one
    (default: "none" when present, else the first filter name in sorted order). A line whose
    ``metrics`` list lacks ``metric`` is a document lm-eval did not score on it (an EMT answer the
    judge could not judge has no ``acc``) and is left out, as lm-eval leaves it out of the mean.
    Lines are read strictly: duplicate keys, NaN, a score outside [0, 1], or a document logged twice
    are named errors.
    """
    return read_samples(path, metric, filter_name).scores


def read_samples(path: str | Path, metric: str = "acc", filter_name: str | None = None) -> SampleScores:
    """:func:`read_sample_scores` plus each scored document's ``doc_id`` (None where a line has none)."""
    path = Path(path)
    fix = "pass the samples_*.jsonl files lm-eval wrote with --log_samples"
    text = read_text(path, what="samples file", fix=fix)
    found = _read_fast(text, metric)
    if found is None:  # something unusual: the strict reader names it, or reads it the careful way
        by_filter, doc_ids = _read_by_filter(path, metric, text)
        found = {
            key: (np.asarray(scores, dtype=float), _id_array([doc_id for doc_id, _ in doc_ids[key]]))
            for key, scores in by_filter.items()
        }
    if filter_name is None:
        filter_name = "none" if "none" in found else sorted(found)[0]
    if filter_name not in found:
        raise EmtbenchError(f"no samples for filter {filter_name!r} (found {sorted(found)})", where=str(path))
    scores, doc_ids = found[filter_name]
    return SampleScores(scores, doc_ids)


def _id_array(doc_ids: list) -> np.ndarray:
    if doc_ids and set(map(type, doc_ids)) == {int}:
        try:
            return np.asarray(doc_ids, dtype=np.int64)
        except OverflowError:
            pass
    array = np.empty(len(doc_ids), dtype=object)
    array[:] = doc_ids
    return array


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


_PLAIN_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_NUMBER_TYPES = {float, int}
_DICT = {dict}


def _read_fast(text: str, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The common, well-formed file at C speed: per filter, (scores, doc_ids); None = let the strict reader look.

    The whole file is one C-level ``json`` parse into plain dicts, with no Python hook per object.
    What the hooks of the strict reader check is checked on the result instead: each key this reader
    uses (the metric, ``doc_id``, ``filter``) occurs in the text exactly as often as the parsed lines
    hold it, so none is repeated within a line (and none hides in a nested object); NaN and Infinity
    stop the parse; escaped surrogates are not in the text; scores are numbers in [0, 1] (an
    overflowing 1e999 is not). Anything this path does not fully vouch for (also: a line that is not an
    object, an unscored line, a missing, repeated or non-integer doc_id) returns None, and the strict
    line-by-line reader gives the named error or reads the file its careful way. Not checked here: keys
    this reader does not use, and a repeated key spelled with ``\\u`` escapes (``"\\u0061cc"``).
    """
    if _ESCAPED_SURROGATE.search(text):
        return None
    # One line per record: joining them with commas makes one JSON array (a blank line in the
    # middle makes ",," and so the strict reader; JSON strings cannot hold a raw newline).
    body = text.strip().replace("\r\n", "\n").replace("\n", ",")
    try:
        records = _PLAIN_DECODER.decode("[" + body + "]")
    except (ValueError, RecursionError):
        return None
    if not records or set(map(type, records)) != _DICT:
        return None
    try:
        scores = list(map(itemgetter(metric), records))
    except KeyError:
        return None  # unscored lines (judge errors): the strict reader decides what they mean
    if set(map(type, scores)) - _NUMBER_TYPES:
        return None  # booleans, strings, null
    values = np.asarray(scores, dtype=float)
    if not (np.all(values >= 0.0) and np.all(values <= 1.0)):
        return None
    doc_ids = list(map(methodcaller("get", "doc_id"), records))
    if None in doc_ids:
        return None
    filters = list(map(methodcaller("get", "filter", _MISSING), records))
    unfiltered = filters.count(_MISSING)
    if unfiltered:
        filters = ["none" if name is _MISSING else name for name in filters]
    # Each string token "acc" / "doc_id" / "filter" in the text (a key in any spacing, or a value) must
    # be one the parse accounts for: the top-level key of each line, and the metric's own name in each
    # line's "metrics" list. A repeated key, one in a nested object, or any other such string is more.
    listed = sum(map(methodcaller("count", metric), map(methodcaller("get", "metrics", ()), records)))
    if (
        text.count(json.dumps(metric)) != len(records) + listed
        or text.count('"doc_id"') != len(records)
        or text.count('"filter"') != len(records) - unfiltered
    ):
        return None  # a key repeated in a line, inside a nested object, or spelled unusually
    names = set(filters)
    if set(map(type, names)) != {str}:
        return None
    found = {}
    if len(names) == 1:
        groups = {filters[0]: (values, doc_ids)}
    else:
        keys = np.asarray(filters, dtype=object)
        groups = {}
        for name in names:
            mask = keys == name
            groups[name] = (values[mask], [doc_ids[i] for i in np.flatnonzero(mask)])
    for name, (group_values, group_ids) in groups.items():
        ids = _id_array(group_ids)
        if ids.dtype != np.int64:
            return None  # doc_ids that are not plain integers: checked the strict way
        if not np.all(ids[1:] > ids[:-1]) and np.unique(ids).size != ids.size:  # lm-eval logs them in order
            return None  # a repeated doc_id: the strict reader names the line
        found[name] = (group_values, ids)
    return found


def _read_by_filter(
    path: Path, metric: str, text: str
) -> tuple[dict[str, list[float]], dict[str, list[tuple[object, int]]]]:
    fix = "pass the samples_*.jsonl files lm-eval wrote with --log_samples"
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
    return by_filter, doc_ids


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


def bootstrap_ci(
    scores: Sequence[float] | np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> tuple[float, float]:
    """Interval (in %) of one task's accuracy from its per-sample scores.

    Drawn with :func:`resample_counts` (the draw the leaderboard shares between a task's runs), so the
    leaderboard's ``accuracy_ci`` of a task is ``bootstrap_ci(scores, seed=task_seed(seed, task))``
    on the scores in doc_id order.
    """
    scores = np.asarray(scores, dtype=float).ravel()
    if scores.size == 0:
        raise EmtbenchError("cannot bootstrap zero samples")
    resampled = resample_counts(scores.size, resamples, seed) @ scores * 100.0 / scores.size
    low, high = percentile_interval(resampled, confidence)
    return float(low), float(high)


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


# ---------------------------------------------------------------- paired intervals


def resample_counts(n: int, resamples: int = DEFAULT_RESAMPLES, seed: Seed = 0) -> np.ndarray:
    """A (resamples, n) matrix: row r counts how often bootstrap resample r drew each of n documents.

    ``counts @ scores / n`` is the mean of every resample of a score vector; applied to the aligned
    score vectors of two models it resamples them jointly (paired). Each row sums to n. The same
    (n, resamples, seed) always gives the same matrix.
    """
    if n <= 0:
        raise EmtbenchError("cannot bootstrap zero samples")
    if resamples <= 0:
        raise EmtbenchError(f"resamples must be positive, got {resamples}")
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n, size=(resamples, n), dtype=np.int64)
    drawn += np.arange(resamples, dtype=np.int64)[:, None] * n
    return np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


def task_seed(seed: int, task: str) -> tuple[int, int]:
    """The seed the leaderboard resamples ``task`` with: separate tasks get separate, stable draws."""
    return (int(seed), crc32(task.encode("utf-8")))


def percentile_interval(
    values: np.ndarray, confidence: float = DEFAULT_CONFIDENCE, axis: int = 0
) -> np.ndarray:
    """Percentile interval of resampled values along ``axis``: shape (2, ...) as (low, high)."""
    if not 0.0 < confidence < 1.0:
        raise EmtbenchError(f"confidence must be in (0, 1), got {confidence}")
    tail = 100.0 * (1.0 - confidence) / 2.0
    return np.percentile(values, [tail, 100.0 - tail], axis=axis)


def _aligned_pair(base_scores, run_scores) -> tuple[np.ndarray, np.ndarray]:
    base = np.asarray(base_scores, dtype=float).ravel()
    run = np.asarray(run_scores, dtype=float).ravel()
    if base.size != run.size:
        raise EmtbenchError(
            f"paired scores must be aligned document by document: {base.size} base vs {run.size} run scores",
            fix="align the two samples files by doc_id first (emtbench.metrics.align_by_doc_id)",
        )
    if base.size == 0:
        raise EmtbenchError("cannot bootstrap zero samples")
    return base, run


def paired_delta_ci(
    base_scores: Sequence[float] | np.ndarray,
    run_scores: Sequence[float] | np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
) -> tuple[float, float]:
    """Paired interval (in points) of accuracy(base) − accuracy(run) on the same documents.

    ``base_scores[i]`` and ``run_scores[i]`` are the two models' per-sample scores on document i (align
    them with :func:`align_by_doc_id`). Every resample draws one set of document indices and uses it
    for both models, so the interval reflects only how the two models disagree document by document.
    Positive = the run lost accuracy (forgetting), the sign the leaderboard's ``forgetting`` uses.
    """
    base, run = _aligned_pair(base_scores, run_scores)
    counts = resample_counts(base.size, resamples, seed)
    resampled = counts @ (base - run) * 100.0 / base.size
    low, high = percentile_interval(resampled, confidence)
    return float(low), float(high)


def paired_statistic_ci(
    pairs: Sequence[tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: Seed = 0,
    seeds: Sequence[Seed] | None = None,
) -> tuple[float, float]:
    """Paired interval of ``statistic(base_acc, run_acc)`` over tasks, each a (base, run) aligned pair.

    Within a task the two models are resampled jointly (same document draw); separate tasks are
    separate test sets and get separate draws (task i uses ``seeds[i]``, by default ``(seed, i)``).
    ``statistic`` maps two (resamples, tasks) arrays of resampled accuracies (%) to one value per resample.
    """
    if not pairs:
        raise EmtbenchError("cannot bootstrap an empty set of tasks")
    if seeds is not None and len(seeds) != len(pairs):
        raise EmtbenchError(f"{len(seeds)} seeds for {len(pairs)} tasks")
    base_acc, run_acc = [], []
    for index, (base_scores, run_scores) in enumerate(pairs):
        base, run = _aligned_pair(base_scores, run_scores)
        task_seed_ = seeds[index] if seeds is not None else (*np.atleast_1d(seed).tolist(), index)
        counts = resample_counts(base.size, resamples, task_seed_)
        both = counts @ np.stack([base, run], axis=1) * 100.0 / base.size
        base_acc.append(both[:, 0])
        run_acc.append(both[:, 1])
    low, high = percentile_interval(statistic(np.stack(base_acc, 1), np.stack(run_acc, 1)), confidence)
    return float(low), float(high)


def paired_group_delta_ci(
    pairs: Sequence[tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]], **options
) -> tuple[float, float]:
    """Paired interval (in points) of Δ = ω(base) − ω(run), ω the harmonic mean of a group's accuracies."""
    return paired_statistic_ci(pairs, lambda base, run: harmonic_rows(base) - harmonic_rows(run), **options)


def significant(ci: Sequence[float] | None) -> bool:
    """True when an interval of a difference excludes 0 (both ends on the same side); False for None."""
    if ci is None:
        return False
    low, high = ci
    return bool(low > 0 or high < 0)


@dataclass(frozen=True)
class Alignment:
    """Indices that put two models' per-document scores side by side, and what only one side had."""

    base_index: np.ndarray
    run_index: np.ndarray
    base_only: int
    run_only: int

    @property
    def shared(self) -> int:
        return int(self.base_index.size)

    def apply(self, base_scores: np.ndarray, run_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(base_scores)[self.base_index], np.asarray(run_scores)[self.run_index]


def _doc_keys(doc_ids: Sequence[object] | np.ndarray, side: str) -> list:
    keys = []
    for doc_id in doc_ids:
        if doc_id is None:
            raise EmtbenchError(
                f"the {side} samples carry no doc_id, so they cannot be paired with the other model's",
                fix="pass samples files lm-eval wrote with --log_samples (every line has a doc_id)",
            )
        keys.append(doc_id if doc_id.__class__ in (int, str) else json.dumps(doc_id, sort_keys=True))
    if len(set(keys)) != len(keys):
        raise EmtbenchError(f"the {side} samples log a doc_id twice; they cannot be paired")
    return keys


def align_by_doc_id(
    base_doc_ids: Sequence[object] | np.ndarray,
    run_doc_ids: Sequence[object] | np.ndarray,
    *,
    drop_unmatched: bool = False,
) -> Alignment:
    """Pair two models' documents by ``doc_id``, in the base's order.

    A document scored for only one model has no partner: by default that is a named error (the two
    runs were not evaluated on the same documents, e.g. a different ``--limit``); with
    ``drop_unmatched=True`` such documents are left out and counted in ``base_only`` / ``run_only``.
    Missing or repeated doc_ids are errors either way.
    """
    base_keys = _doc_keys(base_doc_ids, "base")
    run_keys = _doc_keys(run_doc_ids, "run")
    position = {key: index for index, key in enumerate(run_keys)}
    base_index = [index for index, key in enumerate(base_keys) if key in position]
    run_index = [position[base_keys[index]] for index in base_index]
    base_only, run_only = len(base_keys) - len(base_index), len(run_keys) - len(run_index)
    if not base_index:
        raise EmtbenchError(
            "the two models share no document (no doc_id in common)",
            fix="compare runs evaluated on the same task split",
        )
    if (base_only or run_only) and not drop_unmatched:
        raise EmtbenchError(
            f"{base_only} document(s) scored only for the base and {run_only} only for the run "
            f"({len(base_index)} shared)",
            fix="evaluate both on the same documents, or pass drop_unmatched=True to pair the shared ones",
        )
    return Alignment(
        np.asarray(base_index, dtype=np.intp), np.asarray(run_index, dtype=np.intp), base_only, run_only
    )
