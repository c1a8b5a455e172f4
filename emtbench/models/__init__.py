"""Model wrappers registered with lm-eval and transformers when this package is imported."""

import lm_eval.models  # noqa: F401  (lm-eval's own models first: a non-empty registry skips them)
from lm_eval.api.registry import model_registry

# Registered lazily so importing emtbench.models (e.g. for parts.py) does not import torch/transformers.
model_registry.register("emtbench-clip", target="emtbench.models.clip:CLIPZeroShot")
model_registry.register("emtbench-prismatic", target="emtbench.models.prismatic_lm:PrismaticLM")
