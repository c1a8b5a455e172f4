"""The judge interface: turn a free-form answer into a verdict on an EMT label set.

Judges are registered by name (like lm-eval's metrics) and built from the run's ``--metadata``, so a
new judge is one module in this package with a class under ``@register_judge``; tasks never import a
concrete judge.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from emtbench.core.registry import Registry


class Verdict(str, Enum):
    """What an answer amounts to (the EMT paper's failure taxonomy, §4.2)."""

    CORRECT = "correct"
    WRONG = "wrong"
    """Exactly one label named, not the right one."""
    INTRINSIC = "intrinsic_hallucination"
    """Several labels named (e.g. the whole list echoed back)."""
    EXTRINSIC = "extrinsic_hallucination"
    """No label from the list, a description instead."""
    EMPTY = "empty"
    UNPARSEABLE = "unparseable"
    """The judge itself answered something that is neither yes nor no."""
    JUDGE_ERROR = "judge_error"
    """The judge could not be reached after every retry; never counted as right or wrong."""


METRIC_NAMES: tuple[str, ...] = ("acc", *(v.value for v in Verdict if v is not Verdict.CORRECT))
"""Per-sample metrics every EMT task reports: accuracy and the rate of each other verdict."""


@dataclass(frozen=True)
class JudgeItem:
    """One answer to judge against the gold label, with the task's full label list for context."""

    answer: str
    label: str
    labels: tuple[str, ...]
    kind: str = "object"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    matched: tuple[str, ...] = ()
    """Labels the judge found in the answer (empty for judges that do not look for labels)."""
    confident: bool = True
    """False where a cheap judge suspects its own verdict (negations, stray numbers, partial names)."""

    @property
    def correct(self) -> bool:
        return self.verdict is Verdict.CORRECT


def scores(judgement: Judgement) -> dict[str, float]:
    """One-hot per-sample metrics: ``acc`` and one 0/1 rate per other verdict."""
    result = {"acc": float(judgement.correct)}
    for verdict in Verdict:
        if verdict is not Verdict.CORRECT:
            result[verdict.value] = float(judgement.verdict is verdict)
    return result


class Judge(ABC):
    """Judges a batch at a time so remote judges can run requests concurrently."""

    name: ClassVar[str]
    option_keys: ClassVar[tuple[str, ...]] = ()
    """``--metadata`` keys this judge accepts."""

    @property
    def identity(self) -> str:
        """Stable description of everything that changes verdicts (used as a cache key)."""
        return self.name

    @abstractmethod
    def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]: ...

    def judge_one(self, item: JudgeItem) -> Judgement:
        return self.judge([item])[0]


JUDGES: Registry[type[Judge]] = Registry("judge", builtins="emtbench.judges", where="--metadata judge")
"""Every judge by name; the modules of :mod:`emtbench.judges` register themselves on the first lookup."""


def register_judge(name: str, *, summary: str = "") -> Callable[[type[Judge]], type[Judge]]:
    def wrap(cls: type[Judge]) -> type[Judge]:
        cls.name = name
        JUDGES.add(name, cls, summary=summary)
        return cls

    return wrap


def judge_option_keys() -> set[str]:
    """Every ``--metadata`` key some judge understands, plus ``judge`` itself."""
    return {"judge"} | {key for cls in JUDGES.values() for key in cls.option_keys}


def make_judge(metadata: dict[str, Any]) -> Judge:
    """Build the judge a run asked for (``rule`` unless ``--metadata`` names another)."""
    name = str(metadata.get("judge") or "rule")
    cls = JUDGES.get(name)
    return cls(**{key: metadata[key] for key in cls.option_keys if key in metadata})
