"""Cascade judge: the free rule judge decides the clear cases, an LLM judge only the rest.

Clear cases (decided by the rule judge, no LLM call): empty answers; exactly one label named with
nothing contradicting it; nothing label-like at all. "Contradicting" is what ``find_labels`` flags:
negations, "or", stray numbers, label words outside a matched label. Everything else — several labels,
hedges, partial names such as ``dog`` for ``African_hunting_dog`` — goes to the fallback LLM judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.options import option
from emtbench.judges.base import (
    JUDGES,
    Judge,
    JudgeItem,
    Judgement,
    JudgeRecord,
    checked_options,
    register_judge,
)
from emtbench.judges.llm import LocalLLMJudge, OpenAIJudge
from emtbench.judges.rule import find_labels, rule_judgement, tokens

FALLBACKS = ("llm", "local_llm")


def is_clear_case(item: JudgeItem) -> bool:
    """Whether the rule judge's verdict can be trusted without asking an LLM."""
    if not tokens(item.answer):
        return True
    found, clear = find_labels(item.answer, item.labels)
    return clear and len(found) <= 1


@dataclass(frozen=True)
class CascadeOptions:
    judge_fallback: str = option(
        "llm", help=f"{' | '.join(FALLBACKS)}: the judge of the unclear cases, with its options as above"
    )


@register_judge("cascade")
class CascadeJudge(Judge):
    summary = "the rule judge for clear cases, an LLM judge for the rest"
    options_class = CascadeOptions
    option_keys = tuple(
        dict.fromkeys(("judge_fallback", *OpenAIJudge.option_keys, *LocalLLMJudge.option_keys))
    )

    def __init__(self, judge_fallback: str = "llm", **fallback_options: Any):
        if judge_fallback not in FALLBACKS:
            raise EmtbenchError(
                f"unknown cascade fallback judge {judge_fallback!r}",
                where="--metadata judge_fallback",
                fix=f"use one of: {', '.join(FALLBACKS)}",
            )
        cls = JUDGES[judge_fallback]
        self.fallback: Judge = cls(**checked_options(cls, fallback_options))
        self.rule_decided = 0
        self.escalated = 0

    @property
    def identity(self) -> str:
        return f"cascade|{self.fallback.identity}"

    def record(self) -> JudgeRecord:
        fallback = self.fallback.record()
        return JudgeRecord(self.name, fallback.model, fallback.prompt_hash, self.identity)

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        results: list[Judgement | None] = [None] * len(items)
        hard: list[int] = []
        for index, item in enumerate(items):
            if is_clear_case(item):
                results[index] = rule_judgement(item)
            else:
                hard.append(index)
        self.rule_decided += len(items) - len(hard)
        self.escalated += len(hard)
        if hard:
            for index, judgement in zip(hard, self.fallback.judge([items[i] for i in hard]), strict=True):
                results[index] = judgement
        return [r for r in results if r is not None]

    @property
    def calls(self) -> int:
        """LLM calls the fallback actually made (after its cache)."""
        return int(getattr(self.fallback, "calls", 0))
