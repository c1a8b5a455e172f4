"""lm-eval hooks for the EMT tasks (referenced from the YAML files with ``!function utils.*``)."""

from __future__ import annotations

from emtbench.tasks.runtime import (  # noqa: F401  (re-exported for the YAML files)
    doc_to_image,
    doc_to_target,
    doc_to_text,
    judge_responses,
    load_task_dataset,
    process_results,
)
