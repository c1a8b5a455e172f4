"""EMT results that say how they were made: the judge and the emtbench version in lm-eval's results.

lm-eval writes each task's config (``task.dump_config()``) into the results file under
``configs[TASK]``, metadata included. The EMT task YAMLs name ``utils.EmtTask`` as their ``class:``
(lm-eval's way to give a YAML task Python behaviour; :mod:`emtbench.tasks.emt.utils`), which is
lm-eval's own ``ConfigurableTask`` plus one step after the dataset is loaded: the judge the run built for the
task (:func:`emtbench.tasks.runtime.load_task_dataset`) is recorded in the task's metadata::

    "configs": {"emt_digits": {..., "metadata": {..., "emtbench": {
        "version": "0.4.0", "judge": {"name": "llm", "model": "gpt-3.5-turbo",
                                      "prompt_hash": "1f0c...", "identity": "llm|gpt-3.5-turbo|..."}}}}}

so a results file (and anything built from it: the leaderboard, a model card) can tell which judge
produced an accuracy, even when the run's ``--metadata`` never named one (the default ``rule``).
:func:`run_provenance` reads it back. This module does not import lm-eval (readers of results use it).
"""

from __future__ import annotations

from typing import Any

PROVENANCE_KEY = "emtbench"
"""The task-metadata key holding :func:`provenance` (``configs[TASK]["metadata"]["emtbench"]``)."""


def provenance(task: str) -> dict[str, Any]:
    """What the results of one EMT task record: emtbench's version and the task's judge."""
    from emtbench.core.version import __version__
    from emtbench.tasks.runtime import judge_for_task

    return {"version": __version__, "judge": judge_for_task(task).record().to_dict()}


def run_provenance(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: provenance}`` for every task of an lm-eval results dict that records one."""
    found = {}
    for task, config in (results.get("configs") or {}).items():
        metadata = config.get("metadata") if isinstance(config, dict) else None
        record = metadata.get(PROVENANCE_KEY) if isinstance(metadata, dict) else None
        if isinstance(record, dict):
            found[task] = record
    return found
