"""emtbench: catastrophic-forgetting benchmarks for multimodal LLMs, on lm-evaluation-harness."""

from emtbench.core.version import __version__
from emtbench.models.registration import register_flagship_when_transformers_loads

register_flagship_when_transformers_loads()  # cheap: defers the Auto-class registration until transformers is imported

__all__ = ["__version__"]
