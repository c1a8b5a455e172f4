"""Check where a command will write before it does any work.

A fine-tune that trains for an hour and then finds ``--output`` is a file, or a folder it may not
write in, loses the hour. Every command checks its output paths first with these two functions; the
check writes (and removes) a probe file, because permission bits do not tell the whole story (a
read-only mount, a root user, an ACL).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from emtbench.core.errors import EmtbenchError


def _nearest_existing(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _probe(folder: Path, flag: str, shown: Path) -> None:
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".emtbench-write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise EmtbenchError(
            f"cannot write in {folder} ({error.strerror or error})",
            where=f"{flag} {shown}",
            fix="choose a folder you can write to",
        ) from None


def check_writable_dir(path: str | Path, *, flag: str = "--output") -> Path:
    """``path`` is a folder, or can be made one, that this process can write in; else a named error."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise EmtbenchError(
            f"{path} exists and is not a folder", where=flag, fix=f"give {flag} a folder path"
        )
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise EmtbenchError(
            f"{existing} is a file, so {path} cannot be a folder", where=flag, fix=f"give {flag} another path"
        )
    _probe(existing, flag, path)
    if existing == path and path.parent != path:
        _probe(path.parent, flag, path)  # outputs are staged beside the folder and renamed into place
    return path


def check_writable_file(path: str | Path, *, flag: str) -> Path:
    """``path`` can be written as a file (its folder exists or can be made, and is writable)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise EmtbenchError(f"{path} is a folder", where=flag, fix=f"give {flag} a file name")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise EmtbenchError(
            f"{existing} is a file, so {path} cannot be written", where=flag, fix=f"give {flag} another path"
        )
    _probe(existing, flag, path)
    return path
