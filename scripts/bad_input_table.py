"""Print the bad-input table (per area: inputs tried, named errors, tracebacks, silently wrong, data
lost, code executed) from the tallies the bad-input suite writes, before and after side by side.

    EMTBENCH_BAD_INPUT_TALLY=after.json python -m pytest tests/test_bad_input_*.py
    python scripts/bad_input_table.py after.json [--before before.json] [--cases]

``handled`` (a fault absorbed as designed: a judge reply that became judge_error, a low coverage that
was flagged) counts with the named errors as a correct outcome; it is shown in its own column.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

COLUMNS = (
    ("named", "named errors"),
    ("handled", "handled"),
    ("traceback", "tracebacks"),
    ("silent", "silently wrong"),
    ("lost", "data/work lost"),
    ("executed", "code executed"),
)


def load(path: Path) -> dict[str, Counter]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {area: Counter(counts) for area, counts in data["areas"].items()}


def table(after: dict[str, Counter], before: dict[str, Counter] | None) -> str:
    areas = sorted(set(after) | set(before or {}))
    head = ["area", "inputs tried", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    totals_after, totals_before = Counter(), Counter()

    def cell(kind: str, area: str) -> str:
        now = after.get(area, Counter())[kind]
        if before is None:
            return str(now)
        return f"{before.get(area, Counter())[kind]} → {now}"

    for area in areas:
        tried_now = sum(after.get(area, Counter()).values())
        tried = (
            str(tried_now) if before is None else f"{sum(before.get(area, Counter()).values())} → {tried_now}"
        )
        lines.append("| " + " | ".join([area, tried, *(cell(kind, area) for kind, _ in COLUMNS)]) + " |")
        totals_after.update(after.get(area, Counter()))
        totals_before.update((before or {}).get(area, Counter()))
    total = {"__all__": totals_after}
    total_before = {"__all__": totals_before} if before is not None else None
    after, before = total, total_before
    tried = (
        str(sum(totals_after.values()))
        if before is None
        else f"{sum(totals_before.values())} → {sum(totals_after.values())}"
    )
    lines.append("| **all** | " + " | ".join([tried, *(cell(kind, "__all__") for kind, _ in COLUMNS)]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("after", type=Path, help="tally JSON of the run to report")
    parser.add_argument("--before", type=Path, help="tally JSON of the same suite run on the old code")
    parser.add_argument(
        "--cases", action="store_true", help="also list every case that was not named/handled"
    )
    args = parser.parse_args()
    print(table(load(args.after), load(args.before) if args.before else None))
    if args.cases:
        for source in filter(None, (args.before, args.after)):
            bad = [
                c for c in json.loads(source.read_text())["cases"] if c["kind"] not in ("named", "handled")
            ]
            print(f"\n{source}: {len(bad)} case(s) not named or handled")
            for case in bad:
                print(f"- [{case['area']}] {case['case']}: {case['kind']} ({case['detail'][:120]})")


if __name__ == "__main__":
    main()
