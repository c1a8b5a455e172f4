"""Write a leaderboard as ``leaderboard.json``, ``leaderboard.csv`` and one self-contained ``index.html``.

The page makes no request of its own: CSS, JS and the SVG plots are inline, a Content-Security-Policy
forbids anything else, and every string that came from a manifest or results file goes through
:func:`html.escape`. The same input always gives byte-identical files (no timestamps, fixed order).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable
from html import escape
from importlib.resources import files
from string import Template
from typing import Any

from emtbench.core.version import __version__
from emtbench.leaderboard.build import Leaderboard, Row, group_omega
from emtbench.metrics import SIGNIFICANCE_LEGEND, SIGNIFICANT_MARK, significant

MAX_FORGETTING_CHARTS = 40
MAX_POINT_LABELS = 15
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _number(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _pair(pair: tuple[float, float] | None) -> list[float] | None:
    return None if pair is None else [round(pair[0], 4), round(pair[1], 4)]


def row_record(row: Row, lb: Leaderboard) -> dict[str, Any]:
    """One run as plain JSON data (accuracies and scores in %, parameters changed as a fraction)."""
    entry = row.entry
    record: dict[str, Any] = {
        "name": entry.name,
        "method": entry.method,
        "base": entry.base,
        "url": entry.url,
        "notes": entry.notes,
        "target_tasks": list(entry.target_tasks),
        "original_tasks": entry.original_tasks,
        "accuracy": {task: _number(row.accuracy.get(task)) for task in lb.tasks},
        "accuracy_ci": {task: _pair(row.ci.get(task)) for task in lb.tasks},
        "forgetting": {task: _number(row.forgetting.get(task)) for task in lb.tasks},
        "forgetting_ci": {task: _pair(row.forgetting_ci.get(task)) for task in lb.tasks},
        "forgetting_significant": {
            task: significant(row.forgetting_ci[task]) if task in row.forgetting_ci else None
            for task in lb.tasks
        },
        "group_score": {group: _number(group_omega(row, datasets)) for group, datasets in lb.groups.items()},
        "delta": {group: _number(row.delta.get(group)) for group in lb.delta_groups},
        "delta_ci": {group: _pair(row.delta_ci.get(group)) for group in lb.delta_groups},
        "delta_ci_paired": {
            group: (group not in row.delta_ci_independent) if group in row.delta_ci else None
            for group in lb.delta_groups
        },
        "delta_significant": {
            group: significant(row.delta_ci[group]) if group in row.delta_ci else None
            for group in lb.delta_groups
        },
        "original_average": _number(row.original),
        "target_average": _number(row.target),
        "h_score": _number(row.h_score),
        "average": _number(row.average),
        "params_changed": _number(row.params_changed, 8),
        "encoder_gap": _number(row.encoder_gap),
        "judge_coverage": {task: _number(row.coverage[task]) for task in lb.tasks if task in row.coverage},
        "low_judge_coverage": list(row.low_coverage),
        "curve": entry.curve,
        "step": entry.step,
        "continual": None,
    }
    if row.continual is not None:
        record["continual"] = {
            "tasks": list(row.continual.tasks),
            "stages": list(row.continual.stages),
            "matrix": [[_number(v) for v in values] for values in row.continual.values],
            "bwt": _number(row.bwt),
            "forgetting": _number(row.continual_forgetting),
        }
    return record


def render_json(lb: Leaderboard) -> str:
    data = {
        "title": lb.title,
        "description": lb.description,
        "emtbench_version": __version__,
        "units": {"accuracy": "percent", "delta": "points", "params_changed": "fraction"},
        "intervals": {
            "accuracy_ci": "percentile bootstrap over the run's own documents",
            "forgetting_ci": "paired: base and run resampled with one draw of the base's documents",
            "delta_ci": "paired per task (independent across tasks) where delta_ci_paired is true",
            "significant": SIGNIFICANCE_LEGEND,
        },
        "groups": lb.groups,
        "tasks": lb.tasks,
        "runs": [row_record(row, lb) for row in lb.rows],
        "skipped": [{"where": p.where, "problem": p.message, "left_out": p.consequence} for p in lb.problems],
        "min_judge_coverage": lb.min_judge_coverage,
        "flags": [{"where": p.where, "problem": p.message, "meaning": p.consequence} for p in lb.flags],
        "pairing": [{"where": p.where, "problem": p.message, "meaning": p.consequence} for p in lb.pairing],
    }
    # Compact: json.dumps with indent falls back to the pure-Python encoder, 10x slower at 1,000 runs.
    # allow_nan=False: the readers refuse NaN, so one here is a bug to surface, not JSON to write.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def _csv_text(value: str | None) -> str:
    """Text cells cannot start a spreadsheet formula (a model named ``=HYPERLINK(...)`` stays text)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(CSV_FORMULA_PREFIXES) else text


def _csv_number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def render_csv(lb: Leaderboard) -> str:
    header = ["name", "method", "base", "url"]
    header += [f"acc:{task}" for task in lb.tasks]
    header += [f"ci_low:{task}" for task in lb.tasks] + [f"ci_high:{task}" for task in lb.tasks]
    header += [f"delta:{group}" for group in lb.delta_groups]
    header += ["A_o", "A_t", "h_score", "avg", "params_changed", "encoder_gap", "bwt", "continual_forgetting"]
    header += ["low_judge_coverage"]
    header += [f"forgetting:{task}" for task in lb.tasks]
    header += [f"forgetting_ci_low:{task}" for task in lb.tasks] + [
        f"forgetting_ci_high:{task}" for task in lb.tasks
    ]
    header += [f"delta_ci_low:{group}" for group in lb.delta_groups]
    header += [f"delta_ci_high:{group}" for group in lb.delta_groups]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in lb.rows:
        entry = row.entry
        cells = [_csv_text(entry.name), _csv_text(entry.method), _csv_text(entry.base), _csv_text(entry.url)]
        cells += [_csv_number(row.accuracy.get(task)) for task in lb.tasks]
        cells += [_csv_number(row.ci[task][0]) if task in row.ci else "" for task in lb.tasks]
        cells += [_csv_number(row.ci[task][1]) if task in row.ci else "" for task in lb.tasks]
        cells += [_csv_number(row.delta.get(group)) for group in lb.delta_groups]
        cells += [_csv_number(v) for v in (row.original, row.target, row.h_score, row.average)]
        cells += [_csv_number(row.params_changed, 8), _csv_number(row.encoder_gap)]
        cells += [_csv_number(row.bwt), _csv_number(row.continual_forgetting)]
        cells.append(_csv_text(" ".join(row.low_coverage)))
        cells += [_csv_number(row.forgetting.get(task)) for task in lb.tasks]
        for side in (0, 1):
            cells += [
                _csv_number(row.forgetting_ci[t][side]) if t in row.forgetting_ci else "" for t in lb.tasks
            ]
        for side in (0, 1):
            cells += [
                _csv_number(row.delta_ci[g][side]) if g in row.delta_ci else "" for g in lb.delta_groups
            ]
        writer.writerow(cells)
    return buffer.getvalue()


# ---------------------------------------------------------------- HTML


def _static(name: str) -> str:
    """A file of ``leaderboard/static/`` (package data: the page's stylesheet, script and template)."""
    return files("emtbench.leaderboard").joinpath("static", name).read_text(encoding="utf-8")


STYLE = _static("style.css")
SCRIPT = _static("app.js")
PAGE = Template(_static("page.html"))
"""The page, with ``$name`` placeholders for what :func:`render_html` fills in."""


def _fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _num_cell(
    value: float | None,
    *,
    signed: bool = False,
    ci: tuple[float, float] | None = None,
    extra: str = "",
    note: str = "",
    mark: bool = False,
) -> str:
    shown = escape(_fmt(value, signed=signed))
    if mark and value is not None:
        shown += f'<sup class="sig">{SIGNIFICANT_MARK}</sup>'
    classes = [extra] if extra else []
    if signed and value is not None and value != 0:
        classes.append("pos" if value > 0 else "neg")
    class_attr = f' class="{" ".join(classes)}"' if classes else ""
    sort_value = "" if value is None else repr(round(value, 6))
    interval = ""
    title = ""
    if ci is not None:
        interval = f'<span class="ci">[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>'
        title = f"95% {'paired ' if signed else ''}bootstrap interval {_fmt(ci[0])}–{_fmt(ci[1])}"
    if note:
        title = f"{title}; {note}" if title else note
    title = f' title="{escape(title)}"' if title else ""
    return f'<td{class_attr} data-v="{sort_value}"{title}>{shown}{interval}</td>'


def _change_note(row: Row, task: str) -> str:
    """Tooltip of a fine-tuned run's accuracy cell: its forgetting and paired interval (where there is one)."""
    ci = row.forgetting_ci.get(task)
    if ci is None or task not in row.forgetting:
        return ""
    verdict = "significant" if significant(ci) else "n.s."
    return f"forgetting {row.forgetting[task]:+.2f}, paired [{_fmt(ci[0])}, {_fmt(ci[1])}] {verdict}"


def _text_cell(text: str | None, html_text: str | None = None) -> str:
    return f'<td class="text">{html_text if html_text is not None else escape(text or "")}</td>'


def _table(lb: Leaderboard) -> str:
    task_group = {}
    for group, datasets in lb.groups.items():
        for task in datasets:
            task_group.setdefault(task, group)
    heads = [
        ('<th class="text" title="model (run) name">Model</th>'),
        '<th class="text">Method</th>',
        '<th class="text" title="the run this one was fine-tuned from">Base</th>',
    ]
    for index, task in enumerate(lb.tasks):
        group = task_group.get(task, "other")
        start = " group-start" if index == 0 else ""
        heads.append(
            f'<th class="task{start}" data-first="desc" title="{escape(group)} accuracy (%) on {escape(task)}">{escape(task)}</th>'
        )
    for index, group in enumerate(lb.delta_groups):
        start = ' class="group-start"' if index == 0 else ""
        heads.append(
            f'<th{start} title="Δ {escape(group)}: ω(base) − ω(run); positive = forgetting">Δ {escape(group)}</th>'
        )
    heads += [
        '<th class="group-start" data-first="desc" title="mean accuracy on original tasks">A_o</th>',
        '<th data-first="desc" title="mean accuracy on target tasks">A_t</th>',
        '<th data-first="desc" title="harmonic mean of A_o and A_t (Model Tailor)">H-score</th>',
        '<th data-first="desc" title="mean over original and target tasks">Avg</th>',
        '<th title="share of parameters changed from the base (%)">Params changed %</th>',
        '<th title="encoder zero-shot accuracy minus this model\'s (points)">Encoder gap</th>',
        '<th data-first="desc" title="backward transfer of a continual sequence">BWT</th>',
        '<th title="mean forgetting of a continual sequence">Forgetting</th>',
    ]
    body = []
    for row in lb.rows:
        entry = row.entry
        name_html = escape(entry.name)
        if entry.url:
            name_html = f'<a href="{escape(entry.url)}" rel="noopener noreferrer">{name_html}</a>'
        search_text = " ".join(
            filter(None, (entry.name, entry.method, entry.base or "", entry.notes or ""))
        ).lower()
        cells = [_text_cell(None, name_html), _text_cell(entry.method), _text_cell(entry.base)]
        for index, task in enumerate(lb.tasks):
            low = task in row.low_coverage
            classes = " ".join(
                filter(None, ("group-start" if index == 0 else "", "low-coverage" if low else ""))
            )
            note = (
                f"the judge judged only {100 * row.coverage[task]:.1f}% of the answers; accuracy is over those"
                if low
                else ""
            )
            change = _change_note(row, task)
            note = "; ".join(filter(None, (note, change)))
            cells.append(
                _num_cell(
                    row.accuracy.get(task),
                    ci=row.ci.get(task),
                    extra=classes,
                    note=note,
                    mark=significant(row.forgetting_ci.get(task)),
                )
            )
        for index, group in enumerate(lb.delta_groups):
            independent = group in row.delta_ci_independent
            cells.append(
                _num_cell(
                    row.delta.get(group),
                    signed=True,
                    ci=row.delta_ci.get(group),
                    extra="group-start" if index == 0 else "",
                    note="independent interval (samples carry no shared doc_id)" if independent else "",
                    mark=significant(row.delta_ci.get(group)),
                )
            )
        cells.append(_num_cell(row.original, extra="group-start"))
        cells += [_num_cell(v) for v in (row.target, row.h_score, row.average)]
        cells.append(_num_cell(None if row.params_changed is None else 100 * row.params_changed))
        cells.append(_num_cell(row.encoder_gap, signed=True))
        cells.append(_num_cell(row.bwt, signed=True))
        cells.append(_num_cell(row.continual_forgetting, signed=True))
        body.append(
            f'<tr data-search="{escape(search_text)}" data-method="{escape(entry.method)}">'
            + "".join(cells)
            + "</tr>"
        )
    return (
        '<table id="board"><thead><tr>'
        + "".join(heads)
        + "</tr></thead><tbody>\n"
        + "\n".join(body)
        + "\n</tbody></table>"
    )


def significance_legend() -> str:
    """The line under the table that says what the mark means."""
    return (
        f'<p class="legend"><sup class="sig">{SIGNIFICANT_MARK}</sup> '
        + escape(SIGNIFICANCE_LEGEND.split("= ", 1)[1])
        + ". On an accuracy cell it marks the run's change from its base on that task (per-task forgetting); "
        "on a Δ cell, the group's Δ. Hover a cell for the interval.</p>"
    )


def _svg(width: float, height: float, parts: Iterable[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(label)}">'
        + "".join(parts)
        + "</svg>"
    )


def forgetting_charts(lb: Leaderboard) -> str:
    """One bar chart per fine-tuned run: base accuracy minus run accuracy per task (red = forgot)."""
    rows = [row for row in lb.rows if row.forgetting]
    if not rows:
        return (
            '<p class="muted">No run names an evaluated base, so there is no per-task forgetting to plot.</p>'
        )
    tasks = [task for task in lb.tasks if any(task in row.forgetting for row in rows)]
    scale = max(1.0, *(abs(v) for row in rows for v in row.forgetting.values()))
    bar, gap, left, top, plot_h = 14.0, 4.0, 34.0, 8.0, 110.0
    width = left + len(tasks) * (bar + gap) + 56  # room for the last rotated label
    height = top + plot_h + 70
    zero = top + plot_h / 2
    figures = []
    for row in rows[:MAX_FORGETTING_CHARTS]:
        parts = [
            f'<line x1="{left}" x2="{width - 4:.1f}" y1="{zero}" y2="{zero}" stroke="#888"/>',
            f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">+{scale:.0f}</text>',
            f'<text x="{left - 4}" y="{zero + 3}" text-anchor="end">0</text>',
            f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">−{scale:.0f}</text>',
        ]
        for index, task in enumerate(tasks):
            x = left + index * (bar + gap)
            value = row.forgetting.get(task)
            if value is not None:
                length = abs(value) / scale * plot_h / 2
                y = zero - length if value > 0 else zero
                color = "#c0392b" if value > 0 else "#1f7a4d"
                ci = row.forgetting_ci.get(task)
                note = ""
                if ci is not None:
                    note = f", paired 95% [{ci[0]:.2f}, {ci[1]:.2f}]" + (
                        " significant" if significant(ci) else ""
                    )
                pale = "" if ci is None or significant(ci) else ' fill-opacity="0.45"'
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar}" height="{max(length, 0.5):.1f}" fill="{color}"'
                    f"{pale}><title>{escape(task)}: {value:+.2f} points{note}</title></rect>"
                )
                if ci is not None:  # the paired interval as a whisker, clipped to the plot
                    low, high = (max(-scale, min(scale, end)) for end in ci)
                    top_y, bottom_y = zero - high / scale * plot_h / 2, zero - low / scale * plot_h / 2
                    parts.append(
                        f'<line x1="{x + bar / 2:.1f}" x2="{x + bar / 2:.1f}" y1="{top_y:.1f}" '
                        f'y2="{bottom_y:.1f}" stroke="#1b1f24" stroke-width="1"/>'
                    )
            label_y = top + plot_h + 6
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{label_y:.1f}" transform="rotate(50 {x + bar / 2:.1f} {label_y:.1f})">'
                f"{escape(task[:14])}</text>"
            )
        figures.append(
            f'<figure><figcaption title="{escape(row.entry.name)}">{escape(row.entry.name)} '
            f'<span class="muted">vs {escape(row.entry.base or "")}</span></figcaption>'
            + _svg(width, height, parts, f"per-task forgetting of {row.entry.name}")
            + "</figure>"
        )
    note = ""
    if len(rows) > MAX_FORGETTING_CHARTS:
        note = (
            f'<p class="muted">Showing the first {MAX_FORGETTING_CHARTS} of {len(rows)} fine-tuned runs; '
            "every value is in the table, leaderboard.json and leaderboard.csv.</p>"
        )
    return note + '<div class="charts">' + "".join(figures) + "</div>"


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for multiple in (1, 2, 5, 10):
        if (high - low) / (step * multiple) <= count:
            step *= multiple
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def h_vs_params_chart(lb: Leaderboard) -> str:
    """H-score against the share of parameters changed (log axis when every share is positive)."""
    points = [row for row in lb.rows if row.h_score is not None and row.params_changed is not None]
    if not points:
        return (
            '<p class="muted">No run has both an H-score (target tasks) and a parameters-changed share.</p>'
        )
    shares = [100 * row.params_changed for row in points]  # type: ignore[operator]
    use_log = min(shares) > 0
    xs = [math.log10(s) for s in shares] if use_log else shares
    ys = [row.h_score for row in points]
    # Margins keep points off the frame: a tenth of a decade on the log axis, a point or more on H.
    x_low, x_high = (
        (math.floor(min(xs) - 0.1), math.ceil(max(xs) + 0.1)) if use_log else (0.0, max(100.0, max(xs)))
    )
    if x_high == x_low:
        x_high = x_low + 1
    y_low, y_high = math.floor((min(ys) - 1) / 5) * 5, math.ceil((max(ys) + 1) / 5) * 5  # type: ignore[operator]
    if y_high == y_low:
        y_high = y_low + 10
    width, height, left, right, top, bottom = 640.0, 360.0, 56.0, 16.0, 12.0, 44.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(value: float) -> float:
        return left + (value - x_low) / (x_high - x_low) * plot_w

    def sy(value: float) -> float:
        return top + plot_h - (value - y_low) / (y_high - y_low) * plot_h

    parts = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>']
    x_ticks = list(range(int(x_low), int(x_high) + 1)) if use_log else _ticks(x_low, x_high)
    for tick in x_ticks:
        label = f"{10**tick:g}%" if use_log else f"{tick:g}%"
        parts.append(
            f'<line x1="{sx(tick):.1f}" x2="{sx(tick):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{sx(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{label}</text>')
    for tick in _ticks(y_low, y_high):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{sy(tick) + 3:.1f}" text-anchor="end">{tick:g}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">parameters changed'
        f"{' (log scale)' if use_log else ''}</text>"
    )
    parts.append(
        f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 14 {top + plot_h / 2})">H-score</text>'
    )
    for row, x, y, share in zip(points, xs, ys, shares, strict=True):
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="#2458b3" fill-opacity="0.7">'
            f"<title>{escape(row.entry.name)} ({escape(row.entry.method)}): H {y:.2f}, {share:.3g}% changed</title></circle>"
        )
        if len(points) <= MAX_POINT_LABELS:
            parts.append(
                f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 5:.1f}">{escape(row.entry.name[:24])}</text>'
            )
    return _svg(width, height, parts, "H-score versus share of parameters changed")


CURVE_COLORS = ("#2458b3", "#c0392b", "#1f7a4d", "#8e44ad", "#d68910", "#17a2b8", "#555555")


def curve_series(lb: Leaderboard) -> dict[str, list[Row]]:
    """Rows by manifest ``curve``, in step order, each series starting at its base (step 0) when known."""
    by_name = {row.entry.name: row for row in lb.rows}
    series: dict[str, list[Row]] = {}
    for row in lb.rows:
        if row.entry.curve is not None and row.entry.step is not None:
            series.setdefault(row.entry.curve, []).append(row)
    for _name, rows in series.items():
        rows.sort(key=lambda row: row.entry.step)
        base = by_name.get(rows[0].entry.base or "")
        if base is not None and rows[0].entry.step > 0 and base.entry.curve is None:
            rows.insert(0, base)
    return series


def curve_charts(lb: Leaderboard) -> str:
    """Accuracy against fine-tuning step, one chart per task, one line per fine-tuning run (``curve``).

    The run's base is step 0; whiskers are the accuracy's bootstrap interval where samples were given.
    """
    series = curve_series(lb)
    if not series:
        return '<p class="muted">No run is part of a curve (manifest field <code>curve</code> with <code>step</code>).</p>'
    tasks = [
        task for task in lb.tasks if any(task in row.accuracy for rows in series.values() for row in rows)
    ]
    max_step = max((row.entry.step or 0) for rows in series.values() for row in rows) or 1
    width, height, left, right, top, bottom = 300.0, 210.0, 36.0, 10.0, 10.0, 34.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(step: float) -> float:
        return left + step / max_step * plot_w

    def sy(value: float) -> float:
        return top + plot_h - min(max(value, 0.0), 100.0) / 100.0 * plot_h

    legend = "".join(
        f'<span class="curve-key"><svg width="14" height="10" aria-hidden="true"><line x1="0" x2="14" y1="5" '
        f'y2="5" stroke="{CURVE_COLORS[i % len(CURVE_COLORS)]}" stroke-width="2"/></svg> {escape(name)}</span> '
        for i, name in enumerate(series)
    )
    figures = []
    for task in tasks:
        parts = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>']
        for tick in (0, 25, 50, 75, 100):
            parts.append(
                f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" stroke="#eee"/>'
                f'<text x="{left - 4}" y="{sy(tick) + 3:.1f}" text-anchor="end">{tick}</text>'
            )
        steps = sorted({row.entry.step or 0 for rows in series.values() for row in rows})
        for step in steps:
            parts.append(
                f'<text x="{sx(step):.1f}" y="{top + plot_h + 12}" text-anchor="middle">{step}</text>'
            )
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">fine-tuning step</text>'
        )
        for index, (name, rows) in enumerate(series.items()):
            color = CURVE_COLORS[index % len(CURVE_COLORS)]
            points = [(row.entry.step or 0, row.accuracy[task], row) for row in rows if task in row.accuracy]
            if len(points) > 1:
                path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in points)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
            for x, y, row in points:
                ci = row.ci.get(task)
                if ci is not None:
                    parts.append(
                        f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{sy(ci[0]):.1f}" y2="{sy(ci[1]):.1f}" '
                        f'stroke="{color}" stroke-opacity="0.4"/>'
                    )
                interval = f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci is not None else ""
                parts.append(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
                    f"<title>{escape(name)}, step {x}: {escape(task)} {y:.1f}%{interval} ({escape(row.entry.name)})</title></circle>"
                )
        figures.append(
            f"<figure><figcaption>{escape(task)}</figcaption>"
            + _svg(width, height, parts, f"accuracy on {task} against fine-tuning step")
            + "</figure>"
        )
    return f'<p class="muted">{legend}</p><div class="charts">' + "".join(figures) + "</div>"


def _heat_color(value: float) -> str:
    share = min(max(value / 100.0, 0.0), 1.0)
    return f"hsl(215,70%,{96 - 58 * share:.0f}%)"


def heatmaps(lb: Leaderboard) -> str:
    """Accuracy matrix of each continual run: rows = after training stage, columns = evaluated task."""
    rows = [row for row in lb.rows if row.continual is not None]
    if not rows:
        return '<p class="muted">No continual run in this manifest (give a run an <code>accuracy_matrix</code>).</p>'
    figures = []
    cell_w, cell_h, left, top, right = 62.0, 26.0, 150.0, 90.0, 90.0
    for row in rows:
        matrix = row.continual
        assert matrix is not None
        width = left + cell_w * len(matrix.tasks) + right  # rotated column labels lean right
        height = top + cell_h * len(matrix.stages) + 8
        parts = []
        for j, task in enumerate(matrix.tasks):
            x = left + j * cell_w + cell_w / 2
            parts.append(
                f'<text x="{x:.1f}" y="{top - 6}" transform="rotate(-40 {x:.1f} {top - 6})">{escape(task[:18])}</text>'
            )
        for i, stage in enumerate(matrix.stages):
            y = top + i * cell_h
            parts.append(
                f'<text x="{left - 6}" y="{y + cell_h / 2 + 3:.1f}" text-anchor="end">after {escape(stage[:20])}</text>'
            )
            for j, value in enumerate(matrix.values[i]):
                x = left + j * cell_w
                ink = "#fff" if value > 60 else "#1b1f24"
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell_w - 1}" height="{cell_h - 1}" fill="{_heat_color(value)}">'
                    f"<title>after {escape(stage)}, {escape(matrix.tasks[j])}: {value:.2f}%</title></rect>"
                    f'<text x="{x + cell_w / 2:.1f}" y="{y + cell_h / 2 + 3:.1f}" text-anchor="middle" style="fill:{ink}">{value:.1f}</text>'
                )
        summary = (
            f"BWT {_fmt(row.bwt, signed=True) or 'n/a'}, forgetting {_fmt(row.continual_forgetting) or 'n/a'}"
        )
        figures.append(
            f'<figure><figcaption>{escape(row.entry.name)} <span class="muted">{escape(summary)}</span></figcaption>'
            + _svg(width, height, parts, f"accuracy matrix of {row.entry.name}")
            + "</figure>"
        )
    return '<div class="charts">' + "".join(figures) + "</div>"


def _notice(css_class: str, heading: str, notes: list) -> str:
    """A section listing notes (problems, flags, pairing) under a bold heading; empty when there are none."""
    if not notes:
        return ""
    items = "".join(f"<li>{escape(str(note))}</li>" for note in notes)
    return f'<section class="{css_class}"><strong>{heading}</strong><ul>{items}</ul></section>'


def _problems(lb: Leaderboard) -> str:
    return _notice(
        "problems",
        f"Built with --allow-partial: {len(lb.problems)} problem(s), these parts are left out",
        lb.problems,
    )


def _flags(lb: Leaderboard) -> str:
    return _notice(
        "flags",
        f"Low judge coverage: {len(lb.flags)} cell(s) (marked ⚠) rest on fewer than "
        f"{100 * lb.min_judge_coverage:.0f}% of the answers; a judge outage is not forgetting",
        lb.flags,
    )


def _pairing(lb: Leaderboard) -> str:
    return _notice(
        "flags",
        f"Paired intervals: {len(lb.pairing)} cell(s) where a run and its base were not scored on the "
        "same documents",
        lb.pairing,
    )


def render_html(lb: Leaderboard) -> str:
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; img-src data:"
    )
    methods = sorted({row.entry.method for row in lb.rows})
    options = "".join(f'<option value="{escape(m)}">{escape(m)}</option>' for m in methods)
    groups = "; ".join(f"{escape(g)} = {escape(', '.join(d))}" for g, d in lb.groups.items())
    description = f'<p class="lead">{escape(lb.description)}</p>' if lb.description else ""
    return PAGE.substitute(
        policy=policy,
        title=escape(lb.title),
        style=STYLE,
        description=description,
        problems=_problems(lb) + _flags(lb),
        options=options,
        table=_table(lb),
        legend=significance_legend(),
        pairing=_pairing(lb),
        forgetting=forgetting_charts(lb),
        curves=curve_charts(lb),
        h_vs_params=h_vs_params_chart(lb),
        heatmaps=heatmaps(lb),
        groups=groups,
        version=escape(__version__),
        script=SCRIPT,
    )
