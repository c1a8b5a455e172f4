"""Judges that turn free-form MLLM answers into verdicts; ``rule`` is the default."""

from emtbench.judges.base import (
    JUDGES,
    METRIC_NAMES,
    Judge,
    JudgeItem,
    Judgement,
    Verdict,
    make_judge,
    register_judge,
    scores,
)
from emtbench.judges.rule import RuleJudge

__all__ = [
    "JUDGES",
    "METRIC_NAMES",
    "Judge",
    "JudgeItem",
    "Judgement",
    "RuleJudge",
    "Verdict",
    "make_judge",
    "register_judge",
    "scores",
]
