"""One error type for everything a user can get wrong, so commands can print it without a traceback."""

from __future__ import annotations


class EmtbenchError(Exception):
    """A problem with the user's input: says what is wrong, where, and how to fix it."""

    def __init__(self, problem: str, *, where: str | None = None, fix: str | None = None):
        self.problem = problem
        self.where = where
        self.fix = fix
        parts = [problem if where is None else f"{where}: {problem}"]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__("\n".join(parts))
