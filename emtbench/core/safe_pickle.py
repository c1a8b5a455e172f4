"""Read pickles from downloaded data without running anything they contain.

``pickle.load`` calls whatever callable a file names (``os.system`` included), so a crafted data file
runs code. Some reference data only exists as pickles (the REFER toolkit's ``refs(unc).p`` for
RefCOCO*), and those hold nothing but dicts, lists, strings and numbers. :func:`load_plain_pickle`
uses the standard library's documented way to restrict unpickling (overriding
``Unpickler.find_class``, see the ``pickle`` docs, "Restricting Globals"): no global is looked up
except ``set``/``frozenset``, and persistent ids are refused, so plain containers and scalars load and
anything that would import or call a function is a named error before it happens.
"""

from __future__ import annotations

import builtins
import io
import pickle
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import check_shape

_ALLOWED_GLOBALS = frozenset(
    (module, name) for module in ("builtins", "__builtin__") for name in ("set", "frozenset")
)
"""Protocol-2 pickles (Python 2's among them) build sets by calling these; they construct nothing else."""


class Refused(pickle.UnpicklingError):
    """The file asked for something the restricted unpickler does not admit (raised before it is looked up)."""


_Refused = Refused


class PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers and scalars (the C unpickler, so it stays fast)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return getattr(builtins, name)
        raise _Refused(f"it asks to load {module}.{name}, which plain data never needs")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("it refers to a persistent object, which plain data never needs")


def run_restricted(
    unpickler: pickle.Unpickler, where: str, *, fix: str | None = None, what: str = "pickle"
) -> Any:
    """``unpickler.load()`` with every failure a named error.

    ``unpickler`` must be one whose ``find_class`` admits nothing that can run code of the file's choosing
    (raising :class:`Refused` otherwise), so whatever else the C unpickler raises (EOFError,
    OverflowError, UnicodeDecodeError, MemoryError...) means a corrupt stream.
    """
    try:
        return unpickler.load()
    except Refused as error:
        raise EmtbenchError(
            f"refused to unpickle: {error} (nothing in the file was run)", where=where, fix=fix
        ) from None
    except RecursionError:
        raise EmtbenchError("nested too deeply to unpickle", where=where, fix=fix) from None
    except Exception as error:
        raise EmtbenchError(
            f"not a readable {what} ({type(error).__name__}: {error})", where=where, fix=fix
        ) from None


def loads_plain_pickle(data: bytes, where: str, *, fix: str | None = None) -> Any:
    """Unpickle ``data`` admitting only plain containers and scalars; anything else is a named error."""
    value = run_restricted(PlainDataUnpickler(io.BytesIO(data)), where, fix=fix)
    check_shape(value, where)
    return value


def load_plain_pickle(path: str | Path, *, fix: str | None = None) -> Any:
    """Read a pickle file of plain data (see :func:`loads_plain_pickle`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise EmtbenchError(
            f"cannot read the file ({error.strerror or error})", where=str(path), fix=fix
        ) from None
    return loads_plain_pickle(data, str(path), fix=fix)
