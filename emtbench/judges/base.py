"""The judge interface: turn a free-form answer into a verdict on an EMT label set.

Judges are registered by name (like lm-eval's metrics) and built from the run's ``--metadata``, so a
new judge is one module in this package with a class under ``@register_judge``; tasks never import a
concrete judge. A judge declares its ``--metadata`` options as a dataclass (``options_class``, fields
made with :func:`emtbench.core.options.option`): the keys it accepts and the judges' part of
``emtbench eval --help`` come from it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from emtbench.core.errors import EmtbenchError
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
COVERAGE_METRIC = "judge_coverage"
"""Share of answers the judge could judge (1 − judge_error), reported beside ``acc``."""
TASK_METRICS: tuple[str, ...] = (*METRIC_NAMES, COVERAGE_METRIC)
"""Every metric an EMT task's results hold."""


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
    """Per-sample metrics: ``acc``, one 0/1 rate per other verdict, and ``judge_coverage``.

    An answer the judge could not judge (``judge_error``) has no ``acc``: lm-eval averages each
    metric over the documents that report it, so ``acc`` is accuracy over judged answers and a judge
    outage never looks like forgetting; ``judge_coverage`` (the share judged) is reported beside it,
    and the verdict rates stay shares of all answers.
    """
    judged = judgement.verdict is not Verdict.JUDGE_ERROR
    result = {"acc": float(judgement.correct)} if judged else {}
    for verdict in Verdict:
        if verdict is not Verdict.CORRECT:
            result[verdict.value] = float(judgement.verdict is verdict)
    result[COVERAGE_METRIC] = float(judged)
    return result


@dataclass(frozen=True)
class JudgeRecord:
    """Who judged a run, as its results file records it: what a reader needs to trust or redo a number.

    ``model`` is the model or folder the judge asks (None for the rule judge), ``prompt_hash`` the
    first 12 hex digits of the SHA-256 of the prompt it sends (None for judges without a prompt), and
    ``identity`` the judge's full cache key (URL credentials already removed).
    """

    name: str
    model: str | None = None
    prompt_hash: str | None = None
    identity: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeRecord:
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls) if f.name in data})


def prompt_hash(prompt: str) -> str:
    """The short SHA-256 digest a :class:`JudgeRecord` carries for a judge prompt."""
    import hashlib

    return hashlib.sha256(prompt.encode()).hexdigest()[:12]


class Judge(ABC):
    """Judges a batch at a time so remote judges can run requests concurrently."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    """One line for the help texts."""
    options_class: ClassVar[type | None] = None
    """Dataclass of this judge's ``--metadata`` options (their help included)."""
    option_keys: ClassVar[tuple[str, ...]] = ()
    """``--metadata`` keys this judge accepts (the fields of :attr:`options_class` unless set); their
    types come from ``__init__``'s annotations (:func:`checked_options`)."""
    option_minimums: ClassVar[dict[str, float]] = {}
    """Smallest value each numeric option accepts (inclusive)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("options_class") is not None and "option_keys" not in cls.__dict__:
            cls.option_keys = tuple(f.name for f in dataclasses.fields(cls.options_class))

    @property
    def identity(self) -> str:
        """Stable description of everything that changes verdicts (used as a cache key)."""
        return self.name

    def record(self) -> JudgeRecord:
        """What a results file records about this judge (judges with a model or prompt add them)."""
        return JudgeRecord(self.name, identity=self.identity)

    @abstractmethod
    def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]: ...

    def judge_one(self, item: JudgeItem) -> Judgement:
        return self.judge([item])[0]


JUDGES: Registry[type[Judge]] = Registry("judge", builtins="emtbench.judges", where="--metadata judge")
"""Every judge by name; the modules of :mod:`emtbench.judges` register themselves on the first lookup."""


def register_judge(name: str, *, summary: str = "") -> Callable[[type[Judge]], type[Judge]]:
    def wrap(cls: type[Judge]) -> type[Judge]:
        cls.name = name
        if summary:
            cls.summary = summary
        JUDGES.add(name, cls, summary=cls.summary)
        return cls

    return wrap


def judges_help(indent: str = "  ") -> str:
    """Every judge with its summary and ``--metadata`` options (default and help), for the commands' help."""
    from emtbench.core.options import cli_fields

    lines = []
    for cls in JUDGES.values():
        lines.append(f"{indent}{cls.name:<10} {cls.summary}")
        for field in cli_fields(cls.options_class) if cls.options_class else ():
            default = field.default if field.default is not dataclasses.MISSING else None
            shown = "" if default in (None, "") else f" (default {default})"
            lines.append(f"{indent}  {field.name}{shown}: {field.metadata['help']}")
    return "\n".join(lines)


def judge_option_keys() -> set[str]:
    """Every ``--metadata`` key some judge understands, plus ``judge`` itself."""
    return {"judge"} | {key for cls in JUDGES.values() for key in cls.option_keys}


def make_judge(metadata: dict[str, Any]) -> Judge:
    """Build the judge a run asked for (``rule`` unless ``--metadata`` names another)."""
    name = str(metadata.get("judge") or "rule")
    cls = JUDGES.get(name)
    return cls(**checked_options(cls, metadata))


def checked_options(cls: type[Judge], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The options ``cls`` takes from ``metadata``, each checked against the type ``__init__`` declares.

    Values typed on a command line arrive as strings (``"8"``, ``"true"``), so numeric and boolean
    strings are converted; anything else of the wrong type (``"eight"``, ``[1]``, ``true`` for a
    count, ``1.5`` for an integer, NaN) is a named error before the judge is built.
    """
    hints = typing.get_type_hints(cls.__init__)
    options: dict[str, Any] = {}
    for key in cls.option_keys:
        if key not in metadata:
            continue
        hint = hints.get(key)
        value = metadata[key] if hint is None else _coerce(metadata[key], hint, key)
        minimum = cls.option_minimums.get(key)
        if minimum is not None and value is not None and value < minimum:
            raise EmtbenchError(
                f"{key} must be at least {minimum:g}, got {metadata[key]!r}",
                where=f"--metadata {key}",
                fix=f'e.g. {{"{key}": {max(minimum, 1):g}}}',
            )
        options[key] = value
    return options


def _coerce(value: Any, hint: Any, key: str) -> Any:
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in (bool, int, float, str):
        if kind in allowed:
            converted = _as(kind, value)
            if converted is not None:
                return converted
    names = " or ".join("null" if t is type(None) else getattr(t, "__name__", str(t)) for t in allowed)
    raise EmtbenchError(
        f"{key} must be {'an' if names[0] in 'aeiou' else 'a'} {names}, got {value!r}",
        where=f"--metadata {key}",
        fix="see `emtbench judge-agreement --help` for each judge option",
    )


def _as(kind: type, value: Any) -> Any:
    """``value`` as ``kind`` when it unambiguously is one, else None."""
    text = value.strip() if isinstance(value, str) else None
    if kind is bool:
        if isinstance(value, bool):
            return value
        return {"true": True, "false": False}.get(text.lower()) if text is not None else None
    if isinstance(value, bool):
        return None  # true is not a count, nor a string
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return int(text) if text is not None and text.lstrip("+-").isdigit() else None
    if kind is float:
        if isinstance(value, int | float):
            number = float(value)
        else:
            try:
                number = float(text) if text is not None else math.nan
            except ValueError:
                return None
        return number if math.isfinite(number) else None
    return value if isinstance(value, str) else None
