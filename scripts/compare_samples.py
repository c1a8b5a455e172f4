"""Compare two lm-eval samples files sample by sample: same answers, same verdicts, same accuracy?

Used to check that vlm-evaluation's path (``emtbench vlm-eval run ... score.py``) and ``emtbench
eval`` agree on the same model and images (see docs/vlm-eval.md):

    python scripts/compare_samples.py LM_EVAL_OUTPUT_DIR VLM_EVAL_TASK_RESULTS_DIR --task emt_digits

Either argument may be a samples_<task>_<date>.jsonl file or a folder holding one for the task.
Prints one line per measure and exits 1 when any sample differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emtbench.judges.base import METRIC_NAMES, Judgement, Verdict, scores


def samples_file(path: Path, task: str) -> Path:
    if path.is_file():
        return path
    found = sorted(path.rglob(f"samples_{task}_*.jsonl"))
    if len(found) != 1:
        sys.exit(f"{path}: expected one samples_{task}_*.jsonl, found {len(found)}")
    return found[0]


def verdict(record: dict) -> str:
    """The verdict a record's one-hot metrics encode (lm-eval's samples carry metrics, not verdicts)."""
    for candidate in Verdict:
        if scores(Judgement(candidate)) == {name: float(record[name]) for name in METRIC_NAMES}:
            return candidate.value
    raise ValueError(f"doc {record['doc_id']}: metrics are not one verdict")


def load(path: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {int(r["doc_id"]): r for r in records if r.get("filter", "none") == "none"}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--task", required=True)
    args = parser.parse_args()
    first_path, second_path = samples_file(args.first, args.task), samples_file(args.second, args.task)
    first, second = load(first_path), load(second_path)
    print(f"first:  {first_path} ({len(first)} samples)")
    print(f"second: {second_path} ({len(second)} samples)")
    same_ids = sorted(first) == sorted(second)
    ids = sorted(set(first) & set(second))
    labels = sum(first[i]["doc"]["label"] == second[i]["doc"]["label"] for i in ids)
    answers = sum(first[i]["filtered_resps"][0] == second[i]["filtered_resps"][0] for i in ids)
    verdicts = [(verdict(first[i]), verdict(second[i])) for i in ids]
    same_verdicts = sum(a == b for a, b in verdicts)
    acc_first = sum(float(first[i]["acc"]) for i in ids) / max(1, len(ids))
    acc_second = sum(float(second[i]["acc"]) for i in ids) / max(1, len(ids))
    counts: dict[str, int] = {}
    for a, _ in verdicts:
        counts[a] = counts.get(a, 0) + 1
    print(f"same doc ids:      {same_ids} ({len(ids)} in both)")
    print(f"same gold labels:  {labels}/{len(ids)}")
    print(f"same answers:      {answers}/{len(ids)}")
    print(
        f"same verdicts:     {same_verdicts}/{len(ids)}   (first's verdicts: {dict(sorted(counts.items()))})"
    )
    print(f"accuracy:          {acc_first:.6f} vs {acc_second:.6f}")
    identical = same_ids and labels == answers == same_verdicts == len(ids) and acc_first == acc_second
    print("IDENTICAL" if identical else "DIFFERENT")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
