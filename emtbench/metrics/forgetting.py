"""The forgetting numbers the papers report, as small pure functions (docs/design.md §3).

All accuracies are percentages (0–100). Functions take plain mappings/sequences so they can be checked
against the papers' printed tables and reused by the leaderboard without any I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from emtbench.core.errors import EmtbenchError


def accuracy(correct: Iterable[float | bool]) -> float:
    """Share of correct answers, in % (per-sample scores may be 0/1 or soft scores in [0, 1])."""
    values = [float(value) for value in correct]
    if not values:
        raise EmtbenchError("accuracy of zero samples is undefined", fix="evaluate at least one sample")
    return 100.0 * sum(values) / len(values)


def mean(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        raise EmtbenchError("mean of no values is undefined")
    return math.fsum(values) / len(values)


def harmonic_mean(values: Iterable[float]) -> float:
    """Harmonic mean; dominated by the worst value, which is why the continual-learning paper uses it.

    A zero accuracy makes the harmonic mean zero (its limit), instead of a division error.
    """
    values = [float(value) for value in values]
    if not values:
        raise EmtbenchError("harmonic mean of no values is undefined")
    if any(value < 0 for value in values):
        raise EmtbenchError(f"harmonic mean needs non-negative values, got {values}")
    if any(value == 0 for value in values):
        return 0.0
    return len(values) / math.fsum(1.0 / value for value in values)


def group_score(accuracies: Mapping[str, float], datasets: Sequence[str]) -> float:
    """ω_t: harmonic mean of the accuracies of a task group's evaluation datasets (App. B.4)."""
    missing = [name for name in datasets if name not in accuracies]
    if missing:
        raise EmtbenchError(
            f"no accuracy for {', '.join(missing)}", fix="evaluate every dataset of the group"
        )
    return harmonic_mean(accuracies[name] for name in datasets)


def delta(before: Mapping[str, float], after: Mapping[str, float], datasets: Sequence[str]) -> float:
    """Δ_t(k) = ω_t(1) − ω_t(k): positive = forgetting, negative = backward transfer.

    ``before`` holds the accuracies of the model before training (stage 1), ``after`` those after stage k.
    """
    return group_score(before, datasets) - group_score(after, datasets)


def h_score(original: float, target: float) -> float:
    """Model Tailor's H-score: harmonic mean of the original-task and target-task averages (App. D.2)."""
    return harmonic_mean([original, target])


@dataclass(frozen=True)
class TailorScores:
    """Model Tailor's summary of one model: A_o, A_t, their H-score, and the plain mean of all tasks."""

    original: float
    target: float
    h_score: float
    average: float


def tailor_scores(
    scores: Mapping[str, float], original: Sequence[str], target: Sequence[str]
) -> TailorScores:
    """A_o = mean over original tasks, A_t = mean over target tasks, H, and Avg = mean over all of them."""
    if not original or not target:
        raise EmtbenchError("H-score needs at least one original and one target task")
    missing = [name for name in (*original, *target) if name not in scores]
    if missing:
        raise EmtbenchError(f"no score for {', '.join(missing)}")
    a_o = mean(scores[name] for name in original)
    a_t = mean(scores[name] for name in target)
    return TailorScores(a_o, a_t, h_score(a_o, a_t), mean(scores[name] for name in (*original, *target)))


def encoder_gap(mllm_accuracy: float, encoder_accuracy: float) -> float:
    """Points the MLLM loses against zero-shot classification with its own vision encoder (EMT Table 2).

    Positive = the MLLM is worse than the encoder it is built on.
    """
    return encoder_accuracy - mllm_accuracy


@dataclass(frozen=True)
class AccuracyMatrix:
    """R[i][j] = accuracy (%) on eval task j after training stage i of a continual sequence.

    ``learned_at[j]`` is the stage that trained eval task j (None if no stage did): an eval task is
    learned at the stage of the same name, or on the diagonal when the matrix is square.
    """

    tasks: tuple[str, ...]
    stages: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]

    @classmethod
    def from_dict(cls, data: Mapping) -> AccuracyMatrix:
        """Parse the fine-tuning code's JSON: ``{"tasks": [...], "stages": [...], "matrix": [[...], ...]}``."""
        if not isinstance(data, Mapping):
            raise EmtbenchError("accuracy matrix must be a JSON object with tasks, stages and matrix")
        for key in ("tasks", "stages", "matrix"):
            if not isinstance(data.get(key), list) or not data[key]:
                raise EmtbenchError(f"field {key!r} must be a non-empty list", where=key)
        tasks, stages, matrix = data["tasks"], data["stages"], data["matrix"]
        for key in ("tasks", "stages"):
            names = data[key]
            if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
                raise EmtbenchError(f"field {key!r} must list distinct names", where=key)
        if len(matrix) != len(stages):
            raise EmtbenchError(f"{len(matrix)} rows for {len(stages)} stages", where="matrix")
        rows = []
        for index, row in enumerate(matrix):
            if not isinstance(row, list) or len(row) != len(tasks):
                raise EmtbenchError(f"row {index} must hold {len(tasks)} numbers", where=f"matrix[{index}]")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
                raise EmtbenchError(f"row {index} holds a non-number", where=f"matrix[{index}]")
            if not all(math.isfinite(v) and 0 <= v <= 100 for v in row):
                raise EmtbenchError(
                    f"row {index} holds a value that is not an accuracy in % (0 to 100): {row}",
                    where=f"matrix[{index}]",
                )
            rows.append(tuple(float(v) for v in row))
        return cls(tuple(map(str, tasks)), tuple(map(str, stages)), tuple(rows))

    @property
    def learned_at(self) -> tuple[int | None, ...]:
        square = len(self.tasks) == len(self.stages)
        stage_index = {name: index for index, name in enumerate(self.stages)}
        return tuple(
            stage_index.get(task, index if square else None) for index, task in enumerate(self.tasks)
        )

    def _earlier_tasks(self) -> list[int]:
        """Eval tasks learned before the last stage: the only ones that can be forgotten."""
        last = len(self.stages) - 1
        return [j for j, stage in enumerate(self.learned_at) if stage is not None and stage < last]

    def backward_transfer(self) -> float | None:
        """BWT = mean over earlier tasks of R[T][j] − R[j][j] (negative = forgetting); None if undefined."""
        earlier = self._earlier_tasks()
        if not earlier:
            return None
        final = self.values[-1]
        return mean(final[j] - self.values[self.learned_at[j]][j] for j in earlier)  # type: ignore[index]

    def forgetting(self) -> float | None:
        """Mean over earlier tasks of max_{i<T} R[i][j] − R[T][j] (Chaudhry et al.); None if undefined."""
        earlier = self._earlier_tasks()
        if not earlier:
            return None
        final = self.values[-1]
        return mean(max(row[j] for row in self.values[:-1]) - final[j] for j in earlier)
