"""Writing folders so that a failure never leaves a half-written one behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WRITING_LOCK = ".emtbench-writing"
"""File inside a staging folder, locked (``flock``) by the process writing it for as long as it does.

A killed process (``kill -9``, the OOM killer, a power cut) releases its lock, so a staging folder
whose lock can be taken is the leftover of a dead writer and is removed by the next write of the
same target; one whose lock is held belongs to a live writer and is left alone.
"""
STALE_WITHOUT_LOCK_SECONDS = 600.0
"""A staging folder with no lock file (its writer died before creating it, or an older emtbench wrote
it) counts as a leftover once it is this old."""


def _lock(path: Path):
    """An exclusive, non-blocking lock on ``path`` (an open file), or None if another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cleanup of leftovers, writing still works
        return None
    handle = open(path, "a")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def remove_stale_staging(target: str | Path) -> list[Path]:
    """Remove the hidden ``.TARGET.partial-*`` folders that killed writers of ``target`` left behind."""
    import time

    target = Path(target)
    removed = []
    for candidate in target.parent.glob(f".{target.name}.partial-*"):
        if not candidate.is_dir() or candidate.is_symlink():
            continue
        lock_file = candidate / WRITING_LOCK
        if lock_file.exists():
            handle = _lock(lock_file)
            if handle is None:
                continue  # a live writer holds it
            handle.close()
        else:
            try:
                age = time.time() - candidate.stat().st_mtime
            except OSError:
                continue
            if age < STALE_WITHOUT_LOCK_SECONDS:
                continue  # possibly a writer that has not created its lock yet
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; on success it replaces ``target``, on failure it goes.

    Leftovers of earlier writers of ``target`` that were killed (see :data:`WRITING_LOCK`) are removed
    first, so interrupted runs do not pile up hidden folders.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; these folders are meant to be shared
    lock = _lock(staging / WRITING_LOCK)
    try:
        yield staging
        if lock is not None:
            (staging / WRITING_LOCK).unlink(missing_ok=True)
            lock.close()
            lock = None
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.close()


def write_text_atomically(path: str | Path, text: str, *, mode: int = 0o644) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never a half-written one, and a failure (a full disk,
    an interrupt) leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
