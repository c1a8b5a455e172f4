"""The installed emtbench version (what run records and pages say produced them)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("emtbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"
