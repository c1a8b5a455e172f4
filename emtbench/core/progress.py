"""Progress bars, and the one switch that silences them all: ``--no-progress``.

Every long emtbench step shows a tqdm bar made by :func:`progress_bar`; every command takes
``--no-progress`` (added by :mod:`emtbench.cli` to each one), which runs the command inside
:func:`progress_silenced`. Silenced, emtbench's own bars are off and so are the libraries' it drives:
tqdm's ``TQDM_DISABLE`` and huggingface_hub's ``HF_HUB_DISABLE_PROGRESS_BARS`` are set for libraries
imported later and for child processes, and huggingface_hub, datasets and transformers, when already
imported, are told directly. The Trainer's own bar follows ``TrainingArguments.disable_tqdm``, which
fine-tuning sets from :func:`progress_enabled`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

_silenced = 0
ENVIRONMENT = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
"""What a silenced command sets for libraries imported later and child processes."""


def progress_enabled(enabled: bool = True) -> bool:
    """Whether a bar asked for with ``enabled`` shows: not inside :func:`progress_silenced`."""
    return bool(enabled) and _silenced == 0


def progress_bar(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    min_items: int = 0,
    **kwargs: Any,
):
    """A tqdm bar (``tqdm.auto``), hidden when silenced, when ``enabled`` is False, or when there are
    fewer than ``min_items`` items (quick steps get no bar)."""
    from tqdm.auto import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    show = progress_enabled(enabled) and (total is None or total >= min_items)
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=not show, **kwargs)


@contextmanager
def progress_silenced(silence: bool = True) -> Iterator[None]:
    """Run a block with every progress bar off (a no-op when ``silence`` is False); restored after."""
    global _silenced
    if not silence:
        yield
        return
    saved = {name: os.environ.get(name) for name in ENVIRONMENT}
    os.environ.update(ENVIRONMENT)
    _silenced += 1
    restore = _silence_loaded_libraries()
    try:
        yield
    finally:
        _silenced -= 1
        for undo in restore:
            undo()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _silence_loaded_libraries() -> list:
    """Turn off the bars of the libraries already imported; return how to turn them back on."""
    restore = []
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )

        if not are_progress_bars_disabled():
            disable_progress_bars()
            restore.append(enable_progress_bars)
    if "datasets" in sys.modules:
        import datasets

        if datasets.is_progress_bar_enabled():
            datasets.disable_progress_bars()
            restore.append(datasets.enable_progress_bars)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            restore.append(hf_logging.enable_progress_bar)
    return restore
