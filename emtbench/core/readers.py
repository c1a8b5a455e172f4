"""Strict readers for text that comes from outside: JSON, JSON lines and YAML, read the same way everywhere.

Results files, samples, manifests, run records, accuracy matrices, ``--metadata`` and model configs are
all untrusted: a hand edit, a crashed writer or a hostile file can hold things the standard library
accepts but no emtbench number can be built from. Every reader goes through this module, so each of
these is one named :class:`~emtbench.core.errors.EmtbenchError` (what, which file and line, how to fix),
never a traceback and never a value taken silently:

- bytes that are not UTF-8 (a UTF-8 byte-order mark is accepted);
- syntax errors (with the line and column);
- duplicate keys in one object or mapping (``json`` and PyYAML keep the last one silently);
- ``NaN``, ``Infinity`` and numbers that overflow to infinity (``1e999``): ``json`` accepts them, and
  they make invalid output JSON and ``+nan`` on pages downstream;
- absurd nesting (YAML and pickles deeper than :data:`MAX_DEPTH`; JSON deeper than the C parser
  follows, about 1000 levels) and YAML alias bombs (more than :data:`MAX_NODES` values once aliases
  are expanded), which would exhaust the stack or the CPU of later code.

The standard ``json`` and PyYAML's safe loader do the parsing (C-accelerated where available); what is
written here by hand is only the checks those libraries do not offer as options.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from emtbench.core.errors import EmtbenchError

MAX_DEPTH = 64
"""Deepest nesting of objects/lists accepted: lm-eval's files nest about 6 deep, manifests 4."""
MAX_NODES = 1_000_000
"""Most values one document may expand to (YAML aliases can make a 1 kB file expand to billions)."""


def decode_utf8(data: bytes, where: str) -> str:
    """``data`` as text; a named error (with the byte offset) when it is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise EmtbenchError(
            f"not UTF-8 text (byte {error.start}: {data[error.start : error.start + 1]!r})",
            where=where,
            fix="save the file as UTF-8",
        ) from None


def read_text(path: str | Path, *, what: str = "file", fix: str | None = None) -> str:
    """A UTF-8 text file's contents, with a named error for a missing, unreadable or non-UTF-8 file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise EmtbenchError(f"cannot read the {what} (it is a folder)", where=str(path), fix=fix) from None
    except FileNotFoundError:
        raise EmtbenchError(f"cannot read the {what} (no such file)", where=str(path), fix=fix) from None
    except OSError as error:
        raise EmtbenchError(
            f"cannot read the {what} ({error.strerror or error})", where=str(path), fix=fix
        ) from None
    return decode_utf8(data, str(path))


# --- JSON --------------------------------------------------------------------------------------


class _Refused(ValueError):
    """Raised inside the json hooks; turned into an EmtbenchError with the location by the caller."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {key!r} in one object")
            seen.add(key)
    return result


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:24]}{'...' if len(text) > 24 else ''} overflows to infinity")
    return value


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows")


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_no_lone_surrogates(value: Any, where: str) -> None:
    """``"\\ud800"`` parses to a string no UTF-8 writer can write (a crash at the end of a run)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise EmtbenchError(f"string {item[:40]!r} holds a lone UTF-16 surrogate", where=where)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


# The hooks cost 1.6x json.loads on an lm-eval samples file, 1.9x on a results file (measured by
# scripts/bench_readers.py under load); a regex pre-scan for exponents, to skip the float hook,
# costs more than the hook itself.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_float=_finite_float, parse_constant=_no_constant
)


def parse_json(text: str, where: str, *, fix: str | None = None) -> Any:
    """Parse one JSON document strictly (see the module docstring); ``where`` names its source."""
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise EmtbenchError(
            f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})", where=where, fix=fix
        ) from None
    except _Refused as error:
        raise EmtbenchError(str(error), where=where, fix=fix) from None
    except RecursionError:  # the C parser follows about 1000 levels; what it cannot, nothing should
        raise EmtbenchError("nested too deeply to read", where=where, fix=fix) from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise EmtbenchError(f"not valid JSON: {error}", where=where, fix=fix) from None
    if _ESCAPED_SURROGATE.search(text):
        _check_no_lone_surrogates(value, where)
    return value


def read_json(path: str | Path, *, what: str = "JSON file", fix: str | None = None) -> Any:
    """Read and strictly parse a JSON file."""
    return parse_json(read_text(path, what=what, fix=fix), str(path), fix=fix)


def iter_json_lines(
    path: str | Path, *, what: str = "JSON lines file", fix: str | None = None
) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of a JSON lines file, each parsed strictly."""
    text = read_text(path, what=what, fix=fix)
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, parse_json(line, f"{path}:{number}", fix=fix)


def check_shape(value: Any, where: str, *, max_depth: int = MAX_DEPTH, max_nodes: int | None = None) -> None:
    """Refuse nesting deeper than ``max_depth`` and more than ``max_nodes`` values (aliases expanded).

    JSON needs no node budget (its size is its text's size); YAML does, since aliases repeat values.

    Iterative, so a document nested deeper than the interpreter's stack is reported, not crashed on.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if max_nodes is not None and nodes > max_nodes:
            raise EmtbenchError(f"holds more than {max_nodes:,} values (a YAML alias bomb?)", where=where)
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > max_depth:
            raise EmtbenchError(f"nested deeper than {max_depth} levels", where=where)
        stack.extend((child, depth + 1) for child in children)


def dumps_json(value: Any, **options: Any) -> str:
    """``json.dumps`` that refuses NaN/Infinity instead of writing JSON no strict reader accepts."""
    return json.dumps(value, allow_nan=False, **options)


# --- YAML --------------------------------------------------------------------------------------

_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when PyYAML has it


class StrictYAMLLoader(_BASE_LOADER):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader (no Python objects, ever) that also refuses duplicate keys and .nan/.inf."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in with `<<: *anchor` may be overridden: that is their point
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key (a list as a key): PyYAML reports it itself
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise yaml.constructor.ConstructorError(
                None, None, f"{self.construct_scalar(node)!r} is not a finite number", node.start_mark
            )
        return value


StrictYAMLLoader.add_constructor("tag:yaml.org,2002:float", StrictYAMLLoader.construct_yaml_float)


def parse_yaml(text: str, where: str, *, fix: str | None = None) -> Any:
    """Parse one YAML document with the strict safe loader."""
    try:
        value = yaml.load(text, Loader=StrictYAMLLoader)
    except yaml.YAMLError as error:
        raise EmtbenchError(f"not valid YAML: {error}", where=where, fix=fix) from None
    except RecursionError:
        raise EmtbenchError(f"nested deeper than {MAX_DEPTH} levels", where=where, fix=fix) from None
    check_shape(value, where, max_nodes=MAX_NODES)
    return value


def read_yaml(path: str | Path, *, what: str = "YAML file", fix: str | None = None) -> Any:
    """Read and strictly parse a YAML file."""
    return parse_yaml(read_text(path, what=what, fix=fix), str(path), fix=fix)
