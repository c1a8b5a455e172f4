"""Judges that turn free-form MLLM answers into verdicts; ``rule`` is the default."""

from emtbench.judges.base import (
    JUDGES,
    METRIC_NAMES,
    Judge,
    JudgeItem,
    Judgement,
    JudgeRecord,
    Verdict,
    make_judge,
    register_judge,
    scores,
)
from emtbench.judges.cascade import CascadeJudge
from emtbench.judges.embedding import EmbeddingJudge
from emtbench.judges.llm import LocalLLMJudge, OpenAIJudge
from emtbench.judges.rule import RuleJudge

__all__ = [
    "JUDGES",
    "METRIC_NAMES",
    "CascadeJudge",
    "EmbeddingJudge",
    "Judge",
    "JudgeItem",
    "JudgeRecord",
    "Judgement",
    "LocalLLMJudge",
    "OpenAIJudge",
    "RuleJudge",
    "Verdict",
    "make_judge",
    "register_judge",
    "scores",
]
