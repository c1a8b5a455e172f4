"""emtbench: catastrophic-forgetting benchmarks for multimodal LLMs, on lm-evaluation-harness."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("emtbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

from emtbench.models.flagship import register_when_transformers_loads

register_when_transformers_loads()  # cheap: defers the Auto-class registration until transformers is imported
