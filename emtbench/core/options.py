"""Options dataclasses as command lines: one flag per field, generated, and back again.

Each API function takes a dataclass of options whose fields carry their help (:func:`option`). The
commands build their flags from those fields (:func:`add_options`), read them back into the dataclass
(:func:`from_namespace`), and the demo prints the command that would make the same dataclass
(:func:`to_argv`), so an option is written down once, in the dataclass, and the help, the flag and the
printed command cannot drift apart.

Why not a library: argparse-dataclass generators (simple-parsing, tyro, HfArgumentParser) either
cannot keep emtbench's existing flag names (``--lr``, ``--no-rslora``, repeatable comma-separated
lists) or bring a dependency of their own; this is the ~100 lines that the three commands need.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    *,
    help: str,
    flag: str | None = None,
    negative: str | None = None,
    metavar: str | None = None,
    choices: Sequence[str] | None = None,
    default_factory: Any = _MISSING,
    comma_list: bool = False,
) -> Any:
    """A dataclass field with its command-line form.

    ``flag`` overrides ``--field-name``; ``negative`` makes a ``True``-by-default bool a ``--no-x``
    switch; ``comma_list`` makes a list field a repeatable flag whose values may be comma-separated.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "negative": negative,
        "metavar": metavar,
        "choices": tuple(choices) if choices else None,
        "comma_list": comma_list,
    }
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of an options dataclass that have a command-line form (those made with :func:`option`)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_of(field: dataclasses.Field) -> str:
    if field.metadata.get("negative"):
        return field.metadata["negative"]
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _base_type(cls: type, field: dataclasses.Field) -> tuple[type, bool]:
    """(scalar type, whether the field is a list) from the annotation, ``X | None`` unwrapped."""
    hint = typing.get_type_hints(cls)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) in (list, tuple, Sequence):
        return typing.get_args(hint)[0], True
    return hint, False


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:
        return field.default_factory()
    return _MISSING


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    required: Iterable[str] = (),
) -> None:
    """Add a flag per field of ``cls`` (its help, type and default from the field)."""
    wanted = None if only is None else set(only)
    required = set(required)
    for field in cli_fields(cls):
        if field.name in exclude or (wanted is not None and field.name not in wanted):
            continue
        kind, is_list = _base_type(cls, field)
        default = _default_of(field)
        meta = field.metadata
        help_text = meta["help"]
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS}
        if kind is bool:
            kwargs["action"] = "store_false" if meta.get("negative") else "store_true"
        else:
            kwargs["type"] = str if is_list else kind
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            if is_list:
                kwargs["action"] = "append"
            if field.name in required or (default is _MISSING):
                kwargs["required"] = True
            elif default not in (None, [], ()) and "default" not in help_text:
                help_text = f"{help_text} (default: {default})"
        parser.add_argument(flag_of(field), help=help_text.replace("%", "%%"), **kwargs)


def given(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` the user typed a flag for (flags left out are absent from the namespace)."""
    values = {}
    for field in cli_fields(cls):
        if hasattr(namespace, field.name):
            value = getattr(namespace, field.name)
            if field.metadata.get("comma_list"):
                value = [part.strip() for item in value for part in str(item).split(",") if part.strip()]
            values[field.name] = value
    return values


def from_namespace(cls: type, namespace: argparse.Namespace, **extra: Any) -> Any:
    """``cls`` from the flags typed (defaults for the rest) plus ``extra`` fields."""
    return cls(**given(namespace, cls), **extra)


def to_argv(options: Any, *, always: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[str]:
    """The flags that make ``options`` again: every field that differs from its default (and ``always``)."""
    argv: list[str] = []
    always = set(always)
    cls = type(options)
    for field in cli_fields(cls):
        if field.name in exclude:
            continue
        value = getattr(options, field.name)
        default = _default_of(field)
        if value == default and field.name not in always:
            continue
        kind, is_list = _base_type(cls, field)
        flag = flag_of(field)
        if kind is bool:
            if bool(value) != bool(field.metadata.get("negative")):
                argv.append(flag)
        elif is_list:
            for item in value:
                argv += [flag, str(item)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv
