"""What the EMT task YAMLs call at run time: dataset loading, prompts, and judging.

lm-eval passes ``--metadata`` (merged with ``--model_args``) to ``custom_dataset``; the judge a
run asked for is remembered per task here, because ``process_results`` only sees a document.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from emtbench.errors import EmtbenchError
from emtbench.judges.base import Judge, JudgeItem, judge_option_keys, make_judge, scores
from emtbench.tasks.data import DataOptions, load_emt_dataset
from emtbench.tasks.registry import get_dataset

_JUDGES: dict[str, Judge] = {}


def metadata_keys() -> set[str]:
    """Every ``--metadata`` key an EMT task understands."""
    return set(DataOptions.KEYS) | judge_option_keys()


def cli_metadata(argv: list[str] | None = None) -> dict[str, Any]:
    """The ``--metadata`` a user typed (lm-eval merges it with model args, hiding typos)."""
    argv = sys.argv[1:] if argv is None else argv
    if not any(a == "--metadata" or a.startswith("--metadata=") for a in argv):
        return {}
    try:
        from lm_eval._cli.utils import MergeDictAction
    except ImportError:  # pragma: no cover - older lm-eval
        return {}
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--metadata", nargs="+", action=MergeDictAction, default=None)
    try:
        known, _ = parser.parse_known_args(argv)
    except (SystemExit, ValueError):
        return {}
    return dict(known.metadata or {})


def check_metadata_keys(metadata: dict[str, Any]) -> None:
    unknown = sorted(set(metadata) - metadata_keys())
    if unknown:
        raise EmtbenchError(
            f"unknown metadata key(s) {', '.join(map(repr, unknown))}",
            where="--metadata",
            fix=f"EMT tasks accept: {', '.join(sorted(metadata_keys()))}",
        )


def load_task_dataset(emt_dataset: str, **metadata: Any):
    """``custom_dataset`` hook: the task's evaluation split as a one-split ``DatasetDict``."""
    import datasets

    check_metadata_keys(cli_metadata())
    dataset = get_dataset(emt_dataset)
    options = DataOptions.from_metadata(metadata)
    _JUDGES[dataset.task] = make_judge(metadata)
    return datasets.DatasetDict({"eval": load_emt_dataset(dataset, options)})


def doc_to_image(doc: dict) -> list:
    return [doc["image"]]


def doc_to_text(doc: dict) -> str:
    return "<image>" + get_dataset(doc["emt_task"]).prompt


def doc_to_target(doc: dict) -> str:
    return get_dataset(doc["emt_task"]).labels[doc["label"]]


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    dataset = get_dataset(doc["emt_task"])
    judge = _JUDGES.get(dataset.task) or _JUDGES.setdefault(dataset.task, make_judge({}))
    item = JudgeItem(
        answer=results[0],
        label=dataset.labels[doc["label"]],
        labels=dataset.labels,
        kind=dataset.kind,
    )
    return scores(judge.judge_one(item))
