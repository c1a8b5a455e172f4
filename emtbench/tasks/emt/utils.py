"""lm-eval hooks for the EMT tasks (referenced from the YAML files with ``!function utils.*``).

Only lm-eval's YAML loader imports this module, so lm-eval is already loaded when it does.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.task import ConfigurableTask

from emtbench.tasks.provenance import PROVENANCE_KEY, provenance
from emtbench.tasks.runtime import (  # noqa: F401  (re-exported for the YAML files)
    doc_to_image,
    doc_to_target,
    doc_to_text,
    judge_responses,
    load_task_dataset,
    process_results,
)


class EmtTask(ConfigurableTask):
    """lm-eval's ``ConfigurableTask`` whose results config carries :func:`emtbench.tasks.provenance.provenance`."""

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        from emtbench.datasets.emt import get_dataset

        config = {key: value for key, value in (config or {}).items() if key != "class"}
        super().__init__(config=config, **kwargs)  # loads the dataset, which builds the task's judge
        emt_dataset = (self.config.dataset_kwargs or {}).get("emt_dataset")
        if emt_dataset is None:  # pragma: no cover - every EMT task YAML names its dataset
            return
        metadata = self.config.metadata if isinstance(self.config.metadata, dict) else {}
        metadata[PROVENANCE_KEY] = provenance(get_dataset(emt_dataset).task)
        self.config.metadata = metadata
