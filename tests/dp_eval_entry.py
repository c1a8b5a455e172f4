"""Entry point of the 2-process data-parallel evaluation test: `emtbench eval` with a CPU-sharding model.

lm-eval's ``hf-multimodal`` takes the rank and world size from accelerate only when it counts more
than one GPU (``lm_eval/models/huggingface.py``: ``elif gpus > 1``); on CPU every process would
evaluate everything. ``hf-multimodal-cpu-dp`` adopts accelerate's rank and world size as lm-eval
does for GPUs, so the test exercises the real sharding of documents, the gathering of samples and
metrics on rank 0, and emtbench's task hooks running once per rank. Nothing else changes.

  torchrun --standalone --nproc_per_node 2 tests/dp_eval_entry.py eval --model hf-multimodal-cpu-dp ...
"""

from __future__ import annotations

import sys

from lm_eval.api.registry import register_model
from lm_eval.models.hf_vlms import HFMultimodalLM


@register_model("hf-multimodal-cpu-dp")
class CpuDataParallelMultimodalLM(HFMultimodalLM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        accelerator = getattr(self, "accelerator", None)  # set by HFLM when num_processes > 1
        if accelerator is not None and accelerator.num_processes > 1:
            self._rank = accelerator.process_index
            self._world_size = accelerator.num_processes


if __name__ == "__main__":
    from emtbench.cli import main

    sys.exit(main(sys.argv[1:]))
