"""The demo's summary: one terminal table per run, and ``demo_report.json`` with timings and every metric.

Accuracy, Δ and H-score are read back from the ``leaderboard.json`` that ``emtbench leaderboard build``
wrote, so the table and the page can never disagree; perplexities come from the language stage's
lm-eval results (the leaderboard only ranks accuracies).
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emtbench.demo.options import (
    EMT_TASKS,
    LANGUAGE_TASK,
    REPORT_FILE,
    TABLE_FILE,
    TARGET_DATASET,
    DemoOptions,
    options_record,
)
from emtbench.demo.plan import StageOutcome, run_names

DEFINITIONS = """\
acc       % correct on the first {limit} held-out test images of each task (rule judge; * = fine-tuning target)
ppl       word perplexity of the LM on the first {docs} stdlib module docstrings ({task}, Python {python});
          Δppl = ppl(run) − ppl(base): positive = language forgetting
ΔEMT      ω(base) − ω(run), ω = harmonic mean of the EMT accuracies (CL-LLaVA App. B.4): positive = forgetting
H         2·A_o·A_t/(A_o + A_t): A_t = mean accuracy on the target task ({target}), A_o = on the other
          (original) EMT task(s) ({original}) (Model Tailor H-score, App. D.2); perplexity is not in it
changed   share of all parameter values that differ from the base model (from the run record)"""


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


def collect_runs(options: DemoOptions, outcomes: list[StageOutcome], site: Path) -> dict[str, dict[str, Any]]:
    """Per run: accuracies, failure-kind rates, language probe, Δ, H-score, parameters changed."""
    summaries = {outcome.name: outcome.summary for outcome in outcomes}
    board = json.loads((site / "leaderboard.json").read_text(encoding="utf-8"))
    rows = {row["name"]: row for row in board["runs"]}
    runs: dict[str, dict[str, Any]] = {}
    for name in run_names(options):
        evaluation = summaries.get(f"eval-{name}", {})
        producer = summaries.get(f"finetune-{name}") or summaries.get(name) or {}
        row = rows.get(name, {})
        runs[name] = {
            "method": row.get("method"),
            "accuracy": row.get("accuracy", {}),
            "emt": evaluation.get("emt", {}),
            "language": evaluation.get("language", {}),
            "delta_emt": row.get("delta", {}).get("EMT"),
            "original_average": row.get("original_average"),
            "target_average": row.get("target_average"),
            "h_score": row.get("h_score"),
            "params_changed": row.get("params_changed"),
            "parameters": producer.get("parameters"),
        }
    return runs


def render_table(options: DemoOptions, runs: dict[str, dict[str, Any]]) -> str:
    target = f"emt_{TARGET_DATASET}"
    header = ["run", "method"]
    header += [task.removeprefix("emt_") + ("*" if task == target else "") for task in EMT_TASKS]
    header += ["ppl", "Δppl", "ΔEMT", "H", "changed"]
    base_ppl = runs.get("base", {}).get("language", {}).get("word_perplexity")
    lines = []
    for name, run in runs.items():
        ppl = run["language"].get("word_perplexity")
        delta_ppl = None if name == "base" or ppl is None or base_ppl is None else ppl - base_ppl
        cells = [name, run["method"] or "—"]
        cells += [_cell(run["accuracy"].get(task)) for task in EMT_TASKS]
        cells += [
            _cell(ppl, 2),
            _cell(delta_ppl, 2, signed=True),
            _cell(run["delta_emt"], 1, signed=True),
            _cell(run["h_score"]),
            _percent(run["params_changed"]),
        ]
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            str(cell).ljust(width) if i < 2 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    original = ", ".join(task for task in EMT_TASKS if task != target)
    definitions = DEFINITIONS.format(
        limit=options.limit,
        docs=options.language_docs,
        task=LANGUAGE_TASK,
        python=platform.python_version(),
        target=target,
        original=original,
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
        "runs": runs,
        "leaderboard": str(site / "index.html"),
        "table": table,
    }
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
