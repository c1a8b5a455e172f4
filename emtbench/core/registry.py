"""The one registry type: EMT datasets, judges, fine-tuning and merge methods, model part mappings.

Like lm-eval's registries, a :class:`Registry` maps names to things added with a decorator (or
:meth:`Registry.add` for plain values). Two things lm-eval's ``get`` does not do and users need: an
unknown name is an :class:`~emtbench.core.errors.EmtbenchError` that lists the close matches and all
names, and the built-in entries are imported on the first lookup (``builtins=`` names a module or a
package whose modules register themselves), so importing a registry stays cheap.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from emtbench.core.errors import EmtbenchError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered thing with its name, the other names it answers to, and a line for help texts."""

    name: str
    value: T
    aliases: tuple[str, ...] = ()
    summary: str = ""


class Registry(Generic[T]):
    """Names -> things of one kind (``Registry[type[Judge]]("judge", builtins="emtbench.judges")``).

    ``kind`` names the things in error messages; ``where`` says which option or field a bad name
    came from (``--method``); ``builtins`` is imported before the first lookup.
    """

    def __init__(self, kind: str, *, builtins: str | Iterable[str] = (), where: str | None = None):
        self.kind = kind
        self.where = where
        self._builtins = (builtins,) if isinstance(builtins, str) else tuple(builtins)
        self._loaded = not self._builtins
        self._loading = False
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    # ------------------------------------------------------------------ adding

    def register(self, name: str, *, aliases: Iterable[str] = (), summary: str = "") -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name", summary="...")`` over a class or function."""

        def decorate(value: T) -> T:
            self.add(name, value, aliases=aliases, summary=summary)
            return value

        return decorate

    def add(self, name: str, value: T, *, aliases: Iterable[str] = (), summary: str = "") -> T:
        """Register ``value`` under ``name`` (replacing an earlier entry of that name) and return it."""
        aliases = tuple(aliases)
        for alias in (name, *aliases):
            owner = self._aliases.get(alias)
            if owner is not None and owner != name:
                raise ValueError(f"{self.kind} name {alias!r} is already taken by {owner!r}")
        self.remove(name)
        self._entries[name] = Entry(name, value, aliases, summary)
        for alias in (name, *aliases):
            self._aliases[alias] = name
        return value

    def remove(self, name: str) -> None:
        """Drop an entry (tests that register a throwaway one clean up with this)."""
        entry = self._entries.pop(name, None)
        if entry is not None:
            for alias in (entry.name, *entry.aliases):
                self._aliases.pop(alias, None)

    # ------------------------------------------------------------------ looking up

    def get(self, name: str, *, where: str | None = None) -> T:
        """The thing registered as ``name`` (or an alias), else an error naming close matches and all names."""
        return self.entry(name, where=where).value

    def entry(self, name: str, *, where: str | None = None) -> Entry[T]:
        self._load_builtins()
        key = self._aliases.get(name)
        if key is None:
            raise self.unknown(name, where=where)
        return self._entries[key]

    def unknown(self, name: object, *, where: str | None = None) -> EmtbenchError:
        """The error for a name that is not registered (for callers that normalise names first)."""
        self._load_builtins()
        close = difflib.get_close_matches(str(name), list(self._aliases), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        return EmtbenchError(
            f"unknown {self.kind} {name!r}",
            where=where or self.where,
            fix=f"{hint}use one of: {', '.join(sorted(self._entries))}",
        )

    def names(self) -> list[str]:
        """Registered names (not aliases), in registration order."""
        self._load_builtins()
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        self._load_builtins()
        return list(self._entries.values())

    def values(self) -> list[T]:
        return [entry.value for entry in self.entries()]

    def items(self) -> list[tuple[str, T]]:
        return [(entry.name, entry.value) for entry in self.entries()]

    def __getitem__(self, name: str) -> T:
        """Dictionary-style lookup by name or alias (``KeyError`` when missing, as a dict would)."""
        self._load_builtins()
        return self._entries[self._aliases[name]].value

    def __delitem__(self, name: str) -> None:
        if name not in self._entries:
            raise KeyError(name)
        self.remove(name)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"

    # ------------------------------------------------------------------ built-ins

    def _load_builtins(self) -> None:
        """Import the built-in modules once (a package: each of its modules); re-entrant while importing."""
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for name in self._builtins:
                module = importlib.import_module(name)
                for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
                    if not info.name.startswith("_"):
                        importlib.import_module(f"{name}.{info.name}")
            self._loaded = True
        finally:
            self._loading = False
