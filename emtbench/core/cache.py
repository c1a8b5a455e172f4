"""Where emtbench keeps what is expensive to recompute (verdicts, encoded datasets, the flagship)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$EMTBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/emtbench``, else ``~/.cache/emtbench``."""
    if os.environ.get("EMTBENCH_CACHE_DIR"):
        return Path(os.environ["EMTBENCH_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "emtbench"
