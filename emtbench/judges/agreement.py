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
from emtbench.core.readers import iter_json_lines
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


SAMPLES_FIX = "pass lm-eval samples files of emt_* tasks (they carry doc.emt_task, doc.label and resps)"


def load_samples(paths: Sequence[str | Path]) -> list[Sample]:
    """EMT answers from lm-eval ``--log_samples`` files (``samples_emt_*.jsonl``), read strictly."""
    samples: list[Sample] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise EmtbenchError(
                "samples file not found",
                where=str(path),
                fix="pass the samples_*.jsonl files lm-eval wrote with --log_samples",
            )
        for number, record in iter_json_lines(path, what="samples file", fix=SAMPLES_FIX):
            samples.append(_sample(path, number, record))
    if not samples:
        raise EmtbenchError(
            "no samples to judge",
            where=", ".join(map(str, paths)),
            fix="run `emtbench eval ... --log_samples` and pass its samples_emt_*.jsonl files",
        )
    return samples


def _answer(record: dict) -> Any:
    """The model's first response: ``resps[0][0]`` (lm-eval's raw output), else ``filtered_resps[0]``."""
    resps = record.get("resps")
    if resps:
        if not isinstance(resps, list) or not isinstance(resps[0], list) or not resps[0]:
            raise ValueError(f"resps is not a list of response lists: {str(resps)[:60]}")
        return resps[0][0]
    filtered = record["filtered_resps"]
    if not isinstance(filtered, list) or not filtered:
        raise ValueError(f"filtered_resps is not a list of responses: {str(filtered)[:60]}")
    return filtered[0]


def _sample(path: Path, number: int, record: Any) -> Sample:
    where = f"{path}:{number}"
    try:
        if not isinstance(record, dict) or not isinstance(record.get("doc"), dict):
            raise TypeError("not an object with a `doc`")
        doc = record["doc"]
        task, label_index = doc["emt_task"], doc["label"]
        answer = _answer(record)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise EmtbenchError(
            f"not an EMT sample record ({type(error).__name__}: {error})", where=where, fix=SAMPLES_FIX
        ) from None
    if not isinstance(task, str):
        raise EmtbenchError(f"doc.emt_task {task!r} is not a task name", where=where, fix=SAMPLES_FIX)
    try:
        dataset = get_dataset(task)
    except (KeyError, ValueError, EmtbenchError) as error:
        raise EmtbenchError(f"unknown EMT task {task!r}", where=where, fix=str(error)) from None
    # A label is an index into the task's labels: 3.9, true or "3" are not (and -1 would silently
    # pick the last label through Python's negative indexing).
    if isinstance(label_index, bool) or not isinstance(label_index, int):
        raise EmtbenchError(
            f"doc.label {label_index!r} is not an integer label index", where=where, fix=SAMPLES_FIX
        )
    if not 0 <= label_index < len(dataset.labels):
        raise EmtbenchError(
            f"doc.label {label_index} is out of range for {task} (0 to {len(dataset.labels) - 1})",
            where=where,
            fix=SAMPLES_FIX,
        )
    if not isinstance(answer, str):
        raise EmtbenchError(f"the response {answer!r} is not text", where=where, fix=SAMPLES_FIX)
    item = JudgeItem(answer, dataset.labels[label_index], dataset.labels, dataset.kind)
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


@dataclass
class AgreementReport:
    """Per-judge runs, pairwise agreement, and the answers the judges disagree on (written to ``disagreements``)."""

    runs: list[JudgeRun]
    pairs: list[PairAgreement]
    samples: int
    disagreements: list[dict[str, Any]]
    disagreements_file: Path

    def text(self) -> str:
        """The table ``emtbench judge-agreement`` prints."""
        return format_report(self.runs, self.pairs, self.samples)


def judge_agreement(
    samples: Sequence[str | Path],
    judges: Sequence[str] = ("rule", "embedding"),
    *,
    metadata: dict[str, Any] | None = None,
    disagreements: str | Path = "judge_disagreements.jsonl",
    progress: bool = True,
) -> AgreementReport:
    """Re-judge lm-eval ``--log_samples`` answers with several judges and compare them.

    Example::

        from emtbench.judges.agreement import judge_agreement
        report = judge_agreement(["results/samples_emt_cifar10.jsonl"], ["rule", "embedding"])
        print(report.text())
    """
    from itertools import combinations

    from emtbench.core.progress import progress_bar
    from emtbench.judges.base import judge_option_keys

    names = list(judges)
    metadata = dict(metadata or {})
    if len(names) < 2 or len(set(names)) != len(names):
        raise EmtbenchError(
            f"need at least two different judges, got {','.join(names)!r}",
            where="--judges",
            fix="e.g. --judges rule,embedding,llm",
        )
    unknown = sorted(set(metadata) - judge_option_keys())
    if unknown:
        raise EmtbenchError(
            f"unknown judge option(s) {', '.join(map(repr, unknown))}",
            where="--metadata",
            fix=f"judges accept: {', '.join(sorted(judge_option_keys() - {'judge'}))}",
        )
    from emtbench.core.paths import check_writable_file

    check_writable_file(disagreements, flag="--disagreements")  # before paying for any judge call
    loaded = load_samples(samples)
    built = build_judges(names, metadata)  # fails on bad options before any judging starts
    items = [sample.item for sample in loaded]
    runs = [
        run_judge(name, built[name], items)
        for name in progress_bar(names, desc="judges", unit="judge", enabled=progress)
    ]
    pairs = [compare(a, b) for a, b in combinations(runs, 2)]
    records = disagreement_records(loaded, runs)
    path = Path(disagreements)
    write_jsonl_atomically(path, records)
    return AgreementReport(runs, pairs, len(loaded), records, path)


def write_jsonl_atomically(path: Path, records: list[dict]) -> None:
    """Write to a temporary file beside ``path`` and rename, so a failure leaves no partial file."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
