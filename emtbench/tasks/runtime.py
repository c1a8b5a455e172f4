"""What the EMT task YAMLs call at run time: dataset loading, prompts, and judging.

lm-eval passes ``--metadata`` (merged with ``--model_args``) to ``custom_dataset``; the judge a
run asked for is remembered per task here, because ``process_results`` only sees a document.

Judging happens in one batch per task: the task's filter (:func:`judge_responses`) sees every
response at once and hands them to the judge together — remote judges then run their requests
concurrently — and ``process_results`` only looks the verdict up. Responses pass through unchanged,
so logged samples keep the model's own words.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import parse_json
from emtbench.core.secrets import hide_url
from emtbench.datasets.emt import get_dataset
from emtbench.datasets.loading import DataOptions, load_emt_dataset
from emtbench.judges.base import Judge, JudgeItem, Judgement, judge_option_keys, make_judge, scores

_JUDGES: dict[str, Judge] = {}
_VERDICTS: dict[tuple[str, int, str], Judgement] = {}
"""Verdicts judged ahead by :func:`judge_responses`, keyed by (task, gold label index, answer)."""


def metadata_keys() -> set[str]:
    """Every ``--metadata`` key an EMT task understands."""
    return set(DataOptions.KEYS) | judge_option_keys()


METADATA_FIX = 'one JSON object, e.g. --metadata \'{"split": "test", "judge": "rule"}\', or key=value pairs'


def _metadata_tokens(argv: list[str]) -> tuple[list[list[str]], list[str]]:
    """The values of every ``--metadata`` in ``argv`` (as lm-eval's parser groups them), and argv without them."""
    groups: list[list[str]] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("--metadata="):
            groups.append([arg.split("=", 1)[1]])
        elif arg == "--metadata":
            values = []
            while index + 1 < len(argv) and not argv[index + 1].startswith("-"):
                index += 1
                values.append(argv[index])
            groups.append(values)
        else:
            rest.append(arg)
        index += 1
    return groups, rest


def parse_metadata_values(values: list[str]) -> dict[str, Any]:
    """One ``--metadata``'s values as lm-eval reads them (a JSON object, or key=value tokens), strictly.

    The JSON is read with emtbench's strict reader (duplicate keys, NaN and bad syntax are named
    errors; lm-eval would raise a bare ValueError, or keep the last duplicate).
    """
    if not values:
        raise EmtbenchError("--metadata needs a value", where="--metadata", fix=METADATA_FIX)
    if values[0].lstrip().startswith("{"):
        metadata = parse_json(values[0], "--metadata", fix=METADATA_FIX)
        if not isinstance(metadata, dict):
            raise EmtbenchError("must be a JSON object", where="--metadata", fix=METADATA_FIX)
        return metadata
    from lm_eval._cli.utils import key_val_to_dict

    metadata: dict[str, Any] = {}
    for value in values:
        try:
            metadata.update(key_val_to_dict(value))
        except ValueError as error:
            raise EmtbenchError(str(error), where="--metadata", fix=METADATA_FIX) from None
    return metadata


def cli_metadata(argv: list[str] | None = None) -> dict[str, Any]:
    """The ``--metadata`` a user typed (lm-eval merges it with model args, hiding typos)."""
    argv = sys.argv[1:] if argv is None else argv
    groups, _ = _metadata_tokens(argv)
    metadata: dict[str, Any] = {}
    for values in groups:
        metadata.update(parse_metadata_values(values))
    return metadata


def hide_metadata_secrets(argv: list[str]) -> list[str]:
    """``argv`` with one ``--metadata`` JSON whose URL credentials are redacted (kept in this process).

    lm-eval copies ``--metadata`` into every results file; a judge_base_url such as
    ``https://user:password@proxy/v1`` is passed on as ``https://***@proxy/v1`` and the judge, in this
    process, gets the real URL back (:func:`emtbench.core.secrets.reveal_url`).
    """
    groups, rest = _metadata_tokens(argv)
    if not groups:
        return list(argv)
    metadata = cli_metadata(argv)
    hidden = {key: hide_url(value) if isinstance(value, str) else value for key, value in metadata.items()}
    if hidden == metadata:
        return list(argv)
    return [*rest, "--metadata", json.dumps(hidden)]


def check_metadata_keys(metadata: dict[str, Any]) -> None:
    unknown = sorted(set(metadata) - metadata_keys())
    if unknown:
        raise EmtbenchError(
            f"unknown metadata key(s) {', '.join(map(repr, unknown))}",
            where="--metadata",
            fix=f"EMT tasks accept: {', '.join(sorted(metadata_keys()))}",
        )
    if metadata.get("judge"):
        make_judge(metadata)  # bad judge options (no API key, missing model) fail before a model loads


def freeze_heap_for_generation() -> None:
    """Make lm-eval's per-batch ``gc.collect()`` cheap while an EMT task generates.

    Why: lm-eval's ``hf-multimodal`` runs a full garbage collection after every generation batch;
    with torch, transformers and lm-eval loaded each one took 0.5 s here, 8 of the 12 s of a
    16-image run at batch 1 (``scripts/bench_lmms_eval.py``). ``gc.freeze()`` (standard library)
    moves the objects alive now -- the libraries and the already-loaded model -- out of the
    collector's view, so each collection scans only what evaluation creates. Garbage is collected
    first, and :func:`judge_responses` / :func:`process_results` (which lm-eval calls once generation
    is over) unfreeze, so nothing stays frozen past the task.
    """
    import gc

    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


def load_task_dataset(emt_dataset: str, **metadata: Any):
    """``custom_dataset`` hook: the task's evaluation split as a one-split ``DatasetDict``."""
    import datasets

    from emtbench.tasks.provenance import PROVENANCE_KEY

    check_metadata_keys(cli_metadata())
    metadata.pop(PROVENANCE_KEY, None)  # a task config rebuilt from a results file records its last run
    freeze_heap_for_generation()
    dataset = get_dataset(emt_dataset)
    options = DataOptions.from_metadata(metadata)
    _JUDGES[dataset.task] = make_judge(metadata)
    for key in [key for key in _VERDICTS if key[0] == dataset.task]:  # a new run of this task
        del _VERDICTS[key]
    return datasets.DatasetDict({"eval": load_emt_dataset(dataset, options)})


def doc_to_image(doc: dict) -> list:
    return [doc["image"]]


def doc_to_text(doc: dict) -> str:
    return "<image>" + get_dataset(doc["emt_task"]).prompt


def doc_to_target(doc: dict) -> str:
    return get_dataset(doc["emt_task"]).labels[doc["label"]]


def judge_for_task(task: str) -> Judge:
    """The judge of an EMT task's current run (the one its ``--metadata`` asked for; ``rule`` by default)."""
    return _JUDGES.get(task) or _JUDGES.setdefault(task, make_judge({}))


_judge_for = judge_for_task


def _item(doc: dict, answer: str) -> JudgeItem:
    dataset = get_dataset(doc["emt_task"])
    return JudgeItem(
        answer=answer, label=dataset.labels[doc["label"]], labels=dataset.labels, kind=dataset.kind
    )


def judge_responses(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval filter step: judge every response of a task in one batch, pass responses through."""
    import gc

    gc.unfreeze()  # generation is over (see freeze_heap_for_generation)
    by_task: dict[str, list[tuple[dict, str]]] = {}
    for responses, doc in zip(resps, docs, strict=True):
        if responses:
            by_task.setdefault(doc["emt_task"], []).append((doc, responses[0]))
    for task, pairs in by_task.items():
        unique = {(task, doc["label"], answer): doc for doc, answer in pairs}
        judgements = _judge_for(task).judge([_item(doc, key[2]) for key, doc in unique.items()])
        _VERDICTS.update(zip(unique, judgements, strict=True))
    return resps


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    import gc

    gc.unfreeze()  # a task config without the judging filter: generation is over here too
    task = get_dataset(doc["emt_task"]).task
    judgement = _VERDICTS.get((doc["emt_task"], doc["label"], results[0]))
    if judgement is None:  # a task config without the judging filter: judge this one answer now
        judgement = _judge_for(task).judge_one(_item(doc, results[0]))
    return scores(judgement)
