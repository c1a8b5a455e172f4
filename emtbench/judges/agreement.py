"""Re-judge logged lm-eval samples with several judges and measure how far they agree.

Agreement is on correctness (the bit accuracy is made of): the share of answers two judges call
equally right/wrong, and Cohen's kappa (scikit-learn), which discounts agreement expected by chance.
Answers a judge could not judge (``judge_error``) are left out of that judge's pairs and counted.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.datasets.emt import get_dataset
from emtbench.judges.base import Judge, JudgeItem, Judgement, Verdict, make_judge


@dataclass(frozen=True)
class Sample:
    """One logged answer: where it came from and what to judge."""

    source: str
    doc_id: Any
    item: JudgeItem


@dataclass
class JudgeRun:
    name: str
    judgements: list[Judgement]
    seconds: float
    llm_calls: int | None
    """Answers sent to an LLM (after cache and cascade), None for judges that use none."""

    @property
    def accuracy(self) -> float:
        judged = [j for j in self.judgements if j.verdict is not Verdict.JUDGE_ERROR]
        return sum(j.correct for j in judged) / len(judged) if judged else math.nan

    @property
    def errors(self) -> int:
        return sum(j.verdict is Verdict.JUDGE_ERROR for j in self.judgements)


@dataclass
class PairAgreement:
    first: str
    second: str
    compared: int
    agreement: float
    kappa: float
    disagreeing: list[int] = field(default_factory=list)


def load_samples(paths: Sequence[str | Path]) -> list[Sample]:
    """EMT answers from lm-eval ``--log_samples`` files (``samples_emt_*.jsonl``)."""
    samples: list[Sample] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise EmtbenchError(
                "samples file not found",
                where=str(path),
                fix="pass the samples_*.jsonl files lm-eval wrote with --log_samples",
            )
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                samples.append(_sample(path, number, line))
    if not samples:
        raise EmtbenchError(
            "no samples to judge",
            where=", ".join(map(str, paths)),
            fix="run `emtbench eval ... --log_samples` and pass its samples_emt_*.jsonl files",
        )
    return samples


def _sample(path: Path, number: int, line: str) -> Sample:
    where = f"{path}:{number}"
    try:
        record = json.loads(line)
        doc = record["doc"]
        task, label_index = doc["emt_task"], int(doc["label"])
        answer = record["resps"][0][0] if record.get("resps") else record["filtered_resps"][0]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as error:
        raise EmtbenchError(
            f"not an EMT sample record ({type(error).__name__}: {error})",
            where=where,
            fix="pass lm-eval samples files of emt_* tasks (they carry doc.emt_task, doc.label and resps)",
        ) from None
    try:
        dataset = get_dataset(task)
    except (KeyError, ValueError, EmtbenchError) as error:
        raise EmtbenchError(f"unknown EMT task {task!r}", where=where, fix=str(error)) from None
    item = JudgeItem(str(answer), dataset.labels[label_index], dataset.labels, dataset.kind)
    return Sample(str(path), record.get("doc_id"), item)


def run_judge(name: str, judge: Judge, items: Sequence[JudgeItem]) -> JudgeRun:
    start = time.perf_counter()
    judgements = judge.judge(list(items))
    seconds = time.perf_counter() - start
    calls = getattr(judge, "calls", None)
    return JudgeRun(name, judgements, seconds, None if calls is None else int(calls))


def build_judges(names: Sequence[str], metadata: dict[str, Any]) -> dict[str, Judge]:
    return {name: make_judge({**metadata, "judge": name}) for name in names}


def compare(first: JudgeRun, second: JudgeRun) -> PairAgreement:
    from sklearn.metrics import cohen_kappa_score

    indices = [
        i
        for i, (a, b) in enumerate(zip(first.judgements, second.judgements, strict=True))
        if Verdict.JUDGE_ERROR not in (a.verdict, b.verdict)
    ]
    a = [first.judgements[i].correct for i in indices]
    b = [second.judgements[i].correct for i in indices]
    disagreeing = [i for i, x, y in zip(indices, a, b, strict=True) if x != y]
    agreement = 1 - len(disagreeing) / len(indices) if indices else math.nan
    if not indices:
        kappa = math.nan
    elif len(set(a) | set(b)) == 1:
        kappa = 1.0  # both judges gave every answer the same verdict: perfect, chance-free agreement
    else:
        kappa = float(cohen_kappa_score(a, b))
    return PairAgreement(first.name, second.name, len(indices), agreement, kappa, disagreeing)


def disagreement_records(samples: Sequence[Sample], runs: Sequence[JudgeRun]) -> list[dict[str, Any]]:
    """Answers on which the judges do not all agree about correctness, with every judge's verdict."""
    records = []
    for index, sample in enumerate(samples):
        verdicts = {run.name: run.judgements[index] for run in runs}
        judged = {j.correct for j in verdicts.values() if j.verdict is not Verdict.JUDGE_ERROR}
        if len(judged) > 1:
            records.append(
                {
                    "source": sample.source,
                    "doc_id": sample.doc_id,
                    "label": sample.item.label,
                    "answer": sample.item.answer,
                    "verdicts": {name: j.verdict.value for name, j in verdicts.items()},
                }
            )
    return records


def format_report(runs: Sequence[JudgeRun], pairs: Sequence[PairAgreement], total: int) -> str:
    lines = [
        f"{total} answers re-judged",
        "",
        f"{'judge':<12}{'acc':>8}{'errors':>8}{'seconds':>10}{'LLM calls':>11}",
    ]
    for run in runs:
        calls = "-" if run.llm_calls is None else str(run.llm_calls)
        lines.append(f"{run.name:<12}{run.accuracy:>8.3f}{run.errors:>8}{run.seconds:>10.2f}{calls:>11}")
    lines += ["", f"{'pair':<26}{'compared':>9}{'agreement':>11}{'kappa':>8}{'disagree':>10}"]
    for pair in pairs:
        name = f"{pair.first} vs {pair.second}"
        lines.append(
            f"{name:<26}{pair.compared:>9}{pair.agreement:>11.3f}{pair.kappa:>8.3f}{len(pair.disagreeing):>10}"
        )
    return "\n".join(lines)
