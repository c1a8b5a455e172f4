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
        self._building = False
        emt_dataset = (self.config.dataset_kwargs or {}).get("emt_dataset")
        if emt_dataset is None:  # pragma: no cover - every EMT task YAML names its dataset
            return
        metadata = self.config.metadata if isinstance(self.config.metadata, dict) else {}
        metadata[PROVENANCE_KEY] = provenance(get_dataset(emt_dataset).task)
        self.config.metadata = metadata

    _building = True
    """True until lm-eval's ``__init__`` has returned (see :meth:`fewshot_docs`)."""

    def fewshot_docs(self):
        """None while lm-eval builds the task: its ``__init__`` lists the few-shot docs (for EMT, the
        test split: 10,000 Fashion-MNIST images decoded, ~1.7 s) to make a sampler that a zero-shot
        probe never uses. :attr:`sampler` builds it on first use instead (``--num_fewshot N``)."""
        return None if self._building else super().fewshot_docs()

    @property
    def sampler(self):
        if "_sampler" not in self.__dict__:
            from lm_eval.api import samplers

            docs = self.fewshot_docs()
            name = self.fewshot_cfg.sampler if self.config.fewshot_config else "default"
            self._sampler = None if docs is None else samplers.get_sampler(name)(list(docs), rnd=None)
            if self._sampler is not None and "_fewshot_seed" in self.__dict__:
                self._sampler.set_rnd(self._fewshot_seed)
        return self._sampler

    @sampler.setter
    def sampler(self, value) -> None:
        self._sampler = value

    def set_fewshot_seed(self, seed: int | None = None) -> None:
        """lm-eval's, without building the sampler just to seed it (it is seeded when built)."""
        import random

        self.fewshot_rnd = random.Random(seed)
        self._fewshot_seed = seed
        if self.__dict__.get("_sampler") is not None:
            self._sampler.set_rnd(seed)
