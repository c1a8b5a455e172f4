"""The demo's summary: the terminal table, the forgetting curve, and ``demo_report.json``.

Accuracy, H-score and parameters changed are read back from the ``leaderboard.json`` that ``emtbench
leaderboard build`` wrote, so the table and the page agree. Every Δ is paired: the base and the run
answered the same test images, so its 95% interval resamples image indices jointly
(:func:`emtbench.metrics.paired_delta_ci`, the leaderboard's ``forgetting_ci``); the language probe's Δ
resamples its documents jointly the same way. A ``!`` marks a Δ whose interval excludes 0.
"""

from __future__ import annotations

import json
import math
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from emtbench.demo.options import (
    EMT_TASKS,
    LANGUAGE_TASK,
    OTHER_TASKS,
    REPORT_FILE,
    TABLE_FILE,
    TARGET_DATASET,
    TARGET_TASK,
    DemoOptions,
    options_record,
)
from emtbench.demo.plan import BOOTSTRAP_RESAMPLES, StageOutcome, run_points

RESAMPLES = BOOTSTRAP_RESAMPLES
SEED = 0
FAILURE_KINDS = ("wrong", "intrinsic_hallucination", "extrinsic_hallucination", "empty", "unparseable")

DEFINITIONS = """\
acc       % correct on the first {limit} held-out test images of each task (rule judge; * = fine-tuning target)
Δ         acc(run) − acc(base) in points, [95% paired bootstrap interval: the same image indices are
          resampled for both, {resamples} resamples]; ! = the interval excludes 0 (significant)
ppl       word perplexity of the LM on the first {docs} stdlib module docstrings ({task}, Python {python});
          Δ = ppl(run) − ppl(base), interval from resampling the documents jointly: positive = language forgetting;
          = after it: the LM's weights equal those of an earlier stage, whose result is copied (emtbench.demo.reuse)
borrowed  answers on {others} that name an Animal-MNIST label (the fine-tuning labels: hallucination
          by label borrowing), of all answers on those tasks
H         2·A_o·A_t/(A_o + A_t): A_t = accuracy on {target}, A_o = mean accuracy on the other tasks
          (Model Tailor H-score, App. D.2); perplexity is not in it
changed   share of all parameter values that differ from the base model (from the run record)"""


# ---------------------------------------------------------------------------------------- samples


@dataclass
class TaskSamples:
    """One task's per-image results of one model, in the order lm-eval logged them."""

    doc_ids: list[Any]
    acc: np.ndarray
    """1/0 per image; NaN where the judge gave no verdict (lm-eval leaves those out of ``acc``)."""
    answers: list[str]
    kinds: dict[str, np.ndarray] = field(default_factory=dict)


def _samples_file(folder: Path, task: str) -> Path | None:
    found = sorted(folder.rglob(f"samples_{task}_*.jsonl"))
    return found[-1] if found else None


def read_task_samples(folder: Path, task: str) -> TaskSamples | None:
    """The EMT task's samples under ``folder`` (lm-eval's ``--log_samples`` file), or None."""
    path = _samples_file(folder, task)
    if path is None:
        return None
    doc_ids, acc, answers = [], [], []
    kinds: dict[str, list[float]] = {kind: [] for kind in FAILURE_KINDS}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("filter", "none") != "none":
            continue
        doc_ids.append(record.get("doc_id"))
        value = record.get("acc")
        acc.append(float(value) if isinstance(value, int | float) else math.nan)
        answers.append(_answer_text(record))
        for kind in FAILURE_KINDS:
            kinds[kind].append(float(record.get(kind, 0.0) or 0.0))
    return TaskSamples(doc_ids, np.asarray(acc), answers, {k: np.asarray(v) for k, v in kinds.items()})


def _answer_text(record: dict[str, Any]) -> str:
    for key in ("filtered_resps", "resps"):
        value = record.get(key)
        while isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str):
            return value
    return ""


def read_language_samples(folder: Path) -> dict[Any, tuple[float, float]]:
    """doc_id -> (log-likelihood, words) of ``emt_stdlib_ppl`` (the pairs behind word perplexity)."""
    path = _samples_file(folder, LANGUAGE_TASK)
    if path is None:
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            loglikelihood, words = record["word_perplexity"]
            found[record["doc_id"]] = (float(loglikelihood), float(words))
    return found


def label_pattern(labels: tuple[str, ...]) -> re.Pattern[str]:
    """Any of ``labels`` as a whole word, singular or plural, any case."""
    from emtbench.datasets.emt import spoken

    names = sorted({spoken(label).lower() for label in labels}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")(?:e?s)?\b", re.IGNORECASE)


def target_labels() -> tuple[str, ...]:
    from emtbench.datasets.emt import get_dataset

    return get_dataset(TARGET_DATASET).labels


# ---------------------------------------------------------------------------------------- paired Δ


def paired_accuracy_delta(base: TaskSamples, run: TaskSamples, *, seed: int = SEED) -> dict[str, Any]:
    """acc(run) − acc(base) in points and its paired 95% interval, on the images both judged."""
    from emtbench.metrics import align_by_doc_id, paired_delta_ci, significant

    alignment = align_by_doc_id(base.doc_ids, run.doc_ids, drop_unmatched=True)
    base_acc, run_acc = alignment.apply(base.acc, run.acc)
    judged = ~(np.isnan(base_acc) | np.isnan(run_acc))
    base_acc, run_acc = base_acc[judged], run_acc[judged]
    if base_acc.size == 0:
        return {"delta": None, "ci": None, "significant": False, "paired": 0}
    forgetting_low, forgetting_high = paired_delta_ci(base_acc, run_acc, resamples=RESAMPLES, seed=seed)
    ci = [round(-forgetting_high, 2), round(-forgetting_low, 2)]  # run − base = −(base − run)
    delta = 100.0 * float(run_acc.mean() - base_acc.mean())
    discordant = float(np.mean(base_acc != run_acc))
    return {
        "delta": round(delta, 2),
        "ci": ci,
        "significant": significant(ci),
        "paired": int(base_acc.size),
        "discordant": round(discordant, 4),
    }


def _with_leaderboard_interval(delta: dict[str, Any], row: dict[str, Any], task: str) -> dict[str, Any]:
    """Use ``leaderboard.json``'s paired ``forgetting_ci`` (base − run) so the table and the page agree."""
    from emtbench.metrics import significant

    forgetting = (row.get("forgetting") or {}).get(task)
    interval = (row.get("forgetting_ci") or {}).get(task)
    if forgetting is None or interval is None:
        return delta
    ci = [round(-interval[1], 2), round(-interval[0], 2)]
    return {**delta, "delta": round(-forgetting, 2), "ci": ci, "significant": significant(ci),
            "interval_from": "leaderboard.json forgetting_ci"}  # fmt: skip


def paired_perplexity_delta(
    base: dict[Any, tuple[float, float]], run: dict[Any, tuple[float, float]], *, seed: int = SEED
) -> dict[str, Any]:
    """ppl(run) − ppl(base) (word perplexity) and its 95% interval, documents resampled jointly."""
    from emtbench.metrics import significant
    from emtbench.metrics.bootstrap import percentile_interval, resample_counts

    shared = [doc for doc in base if doc in run]
    if not shared:
        return {"delta": None, "ci": None, "significant": False, "documents": 0}
    b = np.asarray([base[doc] for doc in shared])
    r = np.asarray([run[doc] for doc in shared])

    def ppl(pairs: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        if counts is None:
            return np.exp(-pairs[:, 0].sum() / pairs[:, 1].sum())
        return np.exp(-(counts @ pairs[:, 0]) / (counts @ pairs[:, 1]))

    counts = resample_counts(len(shared), RESAMPLES, seed)
    low, high = percentile_interval(ppl(r, counts) - ppl(b, counts))
    ci = [round(float(low), 3), round(float(high), 3)]
    return {
        "delta": round(float(ppl(r) - ppl(b)), 3),
        "ci": ci,
        "significant": significant(ci),
        "documents": len(shared),
    }


def borrowing(samples: dict[str, TaskSamples | None], pattern: re.Pattern[str]) -> dict[str, Any]:
    """How many answers on the other tasks name a fine-tuning (Animal-MNIST) label, and examples."""
    count = total = 0
    per_task, examples = {}, []
    for task in OTHER_TASKS:
        task_samples = samples.get(task)
        if task_samples is None:
            continue
        hits = [answer for answer in task_samples.answers if pattern.search(answer)]
        per_task[task] = len(hits)
        count += len(hits)
        total += len(task_samples.answers)
        examples += hits[: 3 - len(examples)] if len(examples) < 3 else []
    return {"count": count, "of": total, "per_task": per_task, "examples": examples}


# ---------------------------------------------------------------------------------------- runs


def collect_runs(options: DemoOptions, outcomes: list[StageOutcome], site: Path) -> dict[str, dict[str, Any]]:
    """Per evaluated model: accuracies, failure kinds, paired Δ per task, language Δ, borrowing, H-score."""
    summaries = {outcome.name: outcome.summary for outcome in outcomes}
    board = json.loads((site / "leaderboard.json").read_text(encoding="utf-8"))
    rows = {row["name"]: row for row in board["runs"]}
    pattern = label_pattern(target_labels())
    base_folder = options.out / "eval-base"
    base_samples = {task: read_task_samples(base_folder / "emt", task) for task in EMT_TASKS}
    base_language = read_language_samples(base_folder / "language")
    runs: dict[str, dict[str, Any]] = {}
    for point in run_points(options):
        folder = options.out / point.eval_stage
        evaluation = summaries.get(point.eval_stage, {})
        producer = summaries.get(point.producer or "", {})
        row = rows.get(point.name, {})
        samples = {task: read_task_samples(folder / "emt", task) for task in EMT_TASKS}
        run: dict[str, Any] = {
            "method": row.get("method"),
            "curve": point.curve,
            "step": point.step,
            "accuracy": row.get("accuracy", {}),
            "emt": evaluation.get("emt", {}),
            "language": evaluation.get("language", {}),
            "borrowed": borrowing(samples, pattern),
            "h_score": row.get("h_score"),
            "params_changed": row.get("params_changed"),
            "parameters": producer.get("parameters"),
        }
        if point.name != "base":
            run["delta"] = {
                task: _with_leaderboard_interval(
                    paired_accuracy_delta(base_samples[task], samples[task]), row, task
                )
                for task in EMT_TASKS
                if base_samples.get(task) is not None and samples.get(task) is not None
            }
            run["language_delta"] = paired_perplexity_delta(
                base_language, read_language_samples(folder / "language")
            )
        runs[point.name] = run
    return runs


def curve(options: DemoOptions, runs: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per fine-tuned run: step 0 (the base), each snapshot, the end; accuracy, Δ, failure kinds, ppl."""
    result: dict[str, list[dict[str, Any]]] = {}
    base = runs["base"]
    for method in options.methods:
        points = [("base", base)] + [(name, run) for name, run in runs.items() if run.get("curve") == method]
        result[method] = [
            {
                "run": name,
                "step": run["step"] or 0,
                "accuracy": run["accuracy"],
                "delta": {task: (run.get("delta") or {}).get(task, {}).get("delta") for task in EMT_TASKS},
                "delta_ci": {task: (run.get("delta") or {}).get(task, {}).get("ci") for task in EMT_TASKS},
                "failure_kinds": {
                    task: {kind: run["emt"].get(task, {}).get(kind) for kind in FAILURE_KINDS}
                    for task in EMT_TASKS
                },
                "borrowed": run["borrowed"]["count"],
                "word_perplexity": run["language"].get("word_perplexity"),
            }
            for name, run in points
        ]
    return result


def paired_between(options: DemoOptions, first: str, second: str, task: str) -> dict[str, Any] | None:
    """acc(second) − acc(first) on ``task`` with its paired interval (two runs on the same images)."""
    a = read_task_samples(options.out / f"eval-{first}" / "emt", task)
    b = read_task_samples(options.out / f"eval-{second}" / "emt", task)
    if a is None or b is None:
        return None
    return paired_accuracy_delta(a, b)


def findings(options: DemoOptions, runs: dict[str, dict[str, Any]], fused: str | None) -> dict[str, Any]:
    """The paper's effects, each as measured (F1–F7): numbers only, whatever their sign or significance."""
    ends = [m for m in options.methods if m in runs]
    found: dict[str, Any] = {
        "F1_target_gain": {m: runs[m]["delta"].get(TARGET_TASK) for m in ends},
        "F2_other_tasks": {m: {t: runs[m]["delta"].get(t) for t in OTHER_TASKS} for m in ends},
        "F3_label_borrowing": {
            name: {"count": run["borrowed"]["count"], "of": run["borrowed"]["of"]}
            for name, run in runs.items()
        },
        "F7_language": {m: runs[m]["language_delta"] for m in ends},
    }
    if "lora" in ends and "linear" in ends:
        found["F4_lora_minus_linear"] = {
            task: paired_between(options, "linear", "lora", task) for task in OTHER_TASKS
        }
    early = options.curve_steps[0] if options.curve_steps else None
    if early is not None:
        found["F5_early_vs_end"] = {
            m: {
                "early_step": early,
                "early": {t: runs[f"{m}-step{early}"]["delta"].get(t) for t in EMT_TASKS},
                "end_minus_early": {t: paired_between(options, f"{m}-step{early}", m, t) for t in EMT_TASKS},
            }
            for m in ends
            if f"{m}-step{early}" in runs
        }
    mitigation: dict[str, Any] = {}
    if "rehearsal" in ends and "lora" in ends:
        mitigation["rehearsal_minus_lora"] = {
            t: paired_between(options, "lora", "rehearsal", t) for t in EMT_TASKS
        }
    if fused is not None:
        mitigation["fused_run"] = fused
        for fusion in ("tailor", "dare"):
            if fusion in runs:
                mitigation[f"{fusion}_minus_{fused}"] = {
                    t: paired_between(options, fused, fusion, t) for t in EMT_TASKS
                }
    if mitigation:
        found["F6_mitigation"] = mitigation
    return found


# ---------------------------------------------------------------------------------------- table


def _cell(value: float | None, digits: int = 1, signed: bool = False) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1e5:  # a random or broken LM's perplexity: keep the column readable
        return f"{value:+.2e}" if signed else f"{value:.2e}"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.2f}%" if value >= 1e-4 or value == 0 else f"{100 * value:.1e}%"


def _delta_cell(delta: dict[str, Any] | None, digits: int = 1) -> str:
    if not delta or delta.get("delta") is None:
        return ""
    low, high = delta["ci"]
    mark = "!" if delta["significant"] else " "

    def number(value: float) -> str:
        value = round(value, digits) + 0.0  # no "-0.0"
        return f"{value:+.2e}" if abs(value) >= 1e5 else f"{value:+.{digits}f}"

    return f"{number(delta['delta'])} [{number(low)},{number(high)}]{mark}"


def render_table(options: DemoOptions, runs: dict[str, dict[str, Any]]) -> str:
    header = ["run", "step"]
    header += [task.removeprefix("emt_") + ("*" if task == TARGET_TASK else "") for task in EMT_TASKS]
    header += ["ppl", "borrowed", "H", "changed"]
    lines = []
    for name, run in runs.items():
        cells = [name, "—" if run.get("step") is None else str(run["step"])]
        for task in EMT_TASKS:
            accuracy = _cell(run["accuracy"].get(task))
            delta = _delta_cell((run.get("delta") or {}).get(task))
            cells.append(f"{accuracy} {delta}".rstrip())
        ppl = _cell(run["language"].get("word_perplexity"), 2)
        language = _delta_cell(run.get("language_delta"), 2)
        copied = "=" if run["language"].get("reused_from") else ""
        cells.append(f"{ppl} {language}{copied}".rstrip())
        cells.append(f"{run['borrowed']['count']}/{run['borrowed']['of']}")
        cells += [_cell(run["h_score"]), _percent(run["params_changed"])]
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            str(cell).ljust(width) if i < 1 or 2 <= i < 2 + len(EMT_TASKS) + 1 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    definitions = DEFINITIONS.format(
        limit=options.limit,
        resamples=RESAMPLES,
        docs=options.language_docs,
        task=LANGUAGE_TASK,
        python=platform.python_version(),
        target=TARGET_TASK,
        others=", ".join(OTHER_TASKS),
    )
    return "\n".join([fmt(header), rule, *(fmt(row) for row in lines), "", definitions])


def render_timings(outcomes: list[StageOutcome], base: dict[str, Any]) -> str:
    lines = [f"  {'base-model':<22} {base['seconds']:7.1f} s  ({base['source']})"]
    for outcome in outcomes:
        note = "  (skipped: finished earlier; time recorded then)" if outcome.status == "skipped" else ""
        lines.append(f"  {outcome.name:<22} {outcome.seconds:7.1f} s{note}")
    return "\n".join(lines)


def write_report(
    options: DemoOptions,
    outcomes: list[StageOutcome],
    base: dict[str, Any],
    runs: dict[str, dict[str, Any]],
    table: str,
    wall_seconds: float,
    site: Path,
    *,
    fused: str | None = None,
    forgetting: dict[str, float] | None = None,
) -> Path:
    """``demo_report.json`` and ``demo_table.txt`` under --out (small files, rewritten on every run)."""
    from emtbench.core.version import __version__

    ran = sum(outcome.seconds for outcome in outcomes if outcome.status == "ran")
    report = {
        "emtbench_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "cpu_count": _cpu_count(),
        },
        "options": options_record(options),
        "base_model": base,
        "timings": {
            "this_run_seconds": round(wall_seconds, 1),
            "stages_run_now_seconds": round(ran, 1),
            "stages": [
                {"stage": outcome.name, "status": outcome.status, "seconds": round(outcome.seconds, 1)}
                for outcome in outcomes
            ],
        },
        "significance": {
            "method": "paired bootstrap over image indices (documents for the language probe)",
            "resamples": RESAMPLES,
            "confidence": 0.95,
            "seed": SEED,
            "mark": "! = the interval of Δ excludes 0",
        },
        "fusion": None if fused is None else {
            "rule": "the plain fine-tune (linear, lora, msgm, full) with the largest mean accuracy loss on "
            "emt_digits and emt_fashion_mnist at the end of its run (base − run); ties: first listed",
            "forgetting": forgetting,
            "fused": fused,
        },
        "runs": runs,
        "curve": curve(options, runs),
        "findings": findings(options, runs, fused),
        "leaderboard": str(site / "index.html"),
        "table": table,
    }  # fmt: skip
    path = options.out / REPORT_FILE
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (options.out / TABLE_FILE).write_text(table + "\n", encoding="utf-8")
    return path


def _cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count()
