"""Persistent verdict cache (SQLite) so reruns and interrupted runs never pay a judge twice.

Keyed by judge identity + gold label + answer. Each verdict is committed as soon as it is known, so a
crash mid-run loses nothing already judged. Only verdicts are stored: never prompts' credentials, API
keys or base-URL secrets (a judge's ``identity`` is built without them).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from emtbench.core.cache import user_cache_dir
from emtbench.core.errors import EmtbenchError
from emtbench.judges.base import Judgement, Verdict

DISABLED = {"", "0", "false", "none", "off", "no"}


def default_cache_path() -> Path:
    return user_cache_dir() / "judge_verdicts.sqlite"


class VerdictCache:
    """A thread-safe key-value store of judgements; cheap to open, one row per (judge, label, answer)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (judge TEXT NOT NULL, label TEXT NOT NULL,"
                " answer TEXT NOT NULL, verdict TEXT NOT NULL, matched TEXT NOT NULL,"
                " PRIMARY KEY (judge, label, answer))"
            )
        except (OSError, sqlite3.Error) as error:
            raise EmtbenchError(
                f"cannot open the judge verdict cache: {error}",
                where=str(self.path),
                fix='pass a writable file with --metadata \'{"judge_cache": "PATH"}\' or "none" to disable it',
            ) from error
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_option(cls, value: str | os.PathLike | None) -> VerdictCache | None:
        """``judge_cache`` metadata: unset = default path, ``none``/``false`` = no cache, else a path."""
        if value is None:
            return cls(default_cache_path())
        if str(value).strip().lower() in DISABLED:
            return None
        return cls(value)

    def get_many(self, judge: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Judgement]:
        """Cached judgements for ``(label, answer)`` keys; missing keys are absent."""
        found: dict[tuple[str, str], Judgement] = {}
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            for label, answer in wanted:
                row = self._db.execute(
                    "SELECT verdict, matched FROM verdicts WHERE judge=? AND label=? AND answer=?",
                    (judge, label, answer),
                ).fetchone()
                if row is not None:
                    matched = tuple(m for m in row[1].split("\x1f") if m)
                    found[(label, answer)] = Judgement(Verdict(row[0]), matched)
        self.hits += len(found)
        self.misses += len(wanted) - len(found)
        return found

    def put(self, judge: str, label: str, answer: str, judgement: Judgement) -> None:
        """Store one verdict now (autocommit). Judge errors are never stored: a rerun retries them."""
        if judgement.verdict is Verdict.JUDGE_ERROR:
            return
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)",
                (judge, label, answer, judgement.verdict.value, "\x1f".join(judgement.matched)),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
