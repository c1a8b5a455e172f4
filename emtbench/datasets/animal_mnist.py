"""Animal-MNIST (PyPI ``animal-mnist`` 0.4, MIT): 10,000 28×28 animal silhouettes, read without pickle's code path.

The package ships its data as gzip'd pickles of two numpy arrays (``animal_data_version_3.gz``:
uint8 10000×28×28; ``animal_label_version_3.gz``: int64 labels 0..9, 1000 of each). ``pickle.load``
would call whatever the file names, and the package's own loader imports TensorFlow, so neither runs
here: :class:`NumpyArrayUnpickler` follows the ``pickle`` docs' "Restricting Globals" route and maps
exactly the three globals a plain numpy array pickle names --
``numpy.core.multiarray._reconstruct`` (``numpy._core.multiarray`` in numpy 2's pickles),
``numpy.ndarray`` and ``numpy.dtype`` -- onto local stand-ins that only record what the stream says
(shape, a dtype string, byte order, the raw bytes). The array is then built with ``np.frombuffer``
from those checked values; nothing from the file is ever called. Any other global, a persistent id,
an object or structured dtype, or a state that is not a plain C-ordered array is a named
:class:`~emtbench.core.errors.EmtbenchError`.

The package is installed with ``pip install --no-deps animal-mnist==0.4`` (it declares TensorFlow);
its folder is found with :func:`importlib.util.find_spec`, which does not import it.

Label names: the package has no label -> name table. Its description lists the classes as "Bear,
Bird, Cat, Cow, Dog, Elephant, Giraffe, Horse, Sheep, Zebra" (alphabetical); label i is taken to be
the i-th of those. The file stores the labels in blocks (1000 0s, then 1000 1s, ...), and a sheet of
16 random images per label, looked at by eye, matches that order row for row (label 1: birds,
5: elephants with trunks, 6: long-necked giraffes, 9: striped zebras).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from emtbench.core.errors import EmtbenchError
from emtbench.core.safe_pickle import Refused, run_restricted
from emtbench.datasets.emt import ANIMAL_MNIST_LABELS

ANIMAL_MNIST_PACKAGE = "animal_mnist"
ANIMAL_MNIST_PIN = "animal-mnist==0.4"
ANIMAL_MNIST_DIR_ENV = "EMTBENCH_ANIMAL_MNIST_DIR"
IMAGE_FILE = "animal_data_version_3.gz"
LABEL_FILE = "animal_label_version_3.gz"
IMAGE_COUNT = 10_000
PER_CLASS = 1_000
IMAGE_SHAPE = (28, 28)

TEST_PER_CLASS = 200
"""The package has no split: a seeded hold-out of 200 images per class (20%, 2000) is the test split."""
SPLIT_SEED = 0

MAX_UNZIPPED_BYTES = 64 * 1024 * 1024
"""The real image pickle unzips to 7.8 MB; more than this is not the package's file (a gzip bomb?)."""

INSTALL_FIX = (
    f"install it with `pip install --no-deps {ANIMAL_MNIST_PIN}` (--no-deps: its own loader needs "
    f"TensorFlow, which emtbench never imports; scripts/install.sh does this), or point "
    f"{ANIMAL_MNIST_DIR_ENV} at a folder holding {IMAGE_FILE} and {LABEL_FILE}"
)

_INTEGER_DTYPES = frozenset(f"{kind}{size}" for kind in "iu" for size in (1, 2, 4, 8))
_BYTE_ORDERS = frozenset("<>|=")


class _Refused(Refused):
    """The stream holds something a plain numpy array pickle never does (raised before anything runs)."""


class _NDArrayMarker:
    """Stands in for ``numpy.ndarray``: only ever passed as the first argument of ``_reconstruct``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<numpy.ndarray stand-in>"


_NDARRAY = _NDArrayMarker()


class _DTypeStandIn:
    """Records ``numpy.dtype(name, align, copy)`` and its ``__setstate__`` (byte order); builds nothing."""

    __slots__ = ("byteorder", "name")

    def __init__(self, name: Any, align: Any = False, copy: Any = False, *rest: Any):
        if rest or not isinstance(name, str) or name not in _INTEGER_DTYPES:
            raise _Refused(f"it asks for dtype {name!r}{' with extra arguments' if rest else ''}")
        if not isinstance(align, bool) or not isinstance(copy, bool) or align:
            raise _Refused("it asks for an aligned or otherwise unusual dtype")
        self.name = name
        self.byteorder: str | None = None

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version 3, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3):
            raise _Refused("its dtype state is not numpy's version-3 tuple")
        _, byteorder, subarray, names, fields, *_sizes = state
        if byteorder not in _BYTE_ORDERS or subarray is not None or names is not None or fields is not None:
            raise _Refused("its dtype is structured, a sub-array or has an unknown byte order")
        if not all(type(v) is int for v in _sizes):
            raise _Refused("its dtype state holds non-integer sizes")
        self.byteorder = byteorder

    def to_numpy(self) -> np.dtype:
        if self.byteorder is None:
            raise _Refused("its dtype never received a byte order")
        if self.name.endswith("1"):
            order = "|"
        elif self.byteorder in "<>=":
            order = self.byteorder
        else:
            raise _Refused(f"its {self.name} dtype has no byte order")
        return np.dtype(order + self.name)  # a string of our own checked alphabet, not the file's object


class _ArrayStandIn:
    """What ``_reconstruct(ndarray, (0,), b'b')`` returns here: a record filled in by ``__setstate__``."""

    __slots__ = ("dtype", "fortran", "raw", "shape")

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None
        self.dtype: _DTypeStandIn | None = None
        self.fortran = False
        self.raw: bytes = b""

    def __setstate__(self, state: Any) -> None:
        # numpy's ndarray state: (version 1, shape, dtype, is_fortran, raw bytes)
        if self.shape is not None:
            raise _Refused("it sets one array's state twice")
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise _Refused("its array state is not numpy's version-1 tuple")
        _, shape, dtype, fortran, raw = state
        if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
            raise _Refused(f"its array shape {shape!r} is not a tuple of sizes")
        if not isinstance(dtype, _DTypeStandIn):
            raise _Refused("its array dtype is not a plain numpy dtype")
        if not isinstance(fortran, bool):
            raise _Refused("its array order flag is not a bool")
        if not isinstance(raw, bytes | bytearray):
            raise _Refused("its array data is not raw bytes (an object array?)")
        self.shape, self.dtype, self.fortran, self.raw = shape, dtype, fortran, bytes(raw)

    def to_numpy(self) -> np.ndarray:
        if self.shape is None or self.dtype is None:
            raise _Refused("its array never received a state")
        dtype = self.dtype.to_numpy()
        expected = math.prod(self.shape) * dtype.itemsize
        if len(self.raw) != expected:
            raise _Refused(
                f"its array claims shape {self.shape} of {dtype.name} ({expected:,} bytes) but holds "
                f"{len(self.raw):,} bytes"
            )
        flat = np.frombuffer(self.raw, dtype=dtype)
        return flat.reshape(self.shape, order="F" if self.fortran else "C")


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStandIn:
    if cls is not _NDARRAY or shape != (0,) or typecode != b"b":
        raise _Refused("it calls numpy's _reconstruct with arguments a plain array pickle never uses")
    return _ArrayStandIn()


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # the same global as numpy 2 writes it
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTypeStandIn,
}


class NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickles one plain (integer-dtype) numpy array into a record; no numpy code runs on file data."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(
                f"it asks to load {module}.{name}, which a plain numpy array never needs"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("it refers to a persistent object, which a plain numpy array never needs")


def loads_numpy_array(data: bytes, where: str) -> np.ndarray:
    """The integer array a numpy pickle ``data`` holds, or a named error (nothing in ``data`` is run)."""
    fix = "use the data files of animal-mnist 0.4 (reinstall it)"
    value = run_restricted(NumpyArrayUnpickler(io.BytesIO(data)), where, fix=fix, what="numpy pickle")
    if not isinstance(value, _ArrayStandIn):
        raise EmtbenchError(
            f"refused to unpickle: it holds a {type(value).__name__}, not one numpy array "
            "(nothing in the file was run)",
            where=where,
            fix=fix,
        )
    try:
        return value.to_numpy()
    except _Refused as error:
        raise EmtbenchError(
            f"refused to unpickle: {error} (nothing in the file was run)", where=where, fix=fix
        ) from None
    except Exception as error:  # np.frombuffer on checked stand-ins: a corrupt stream, nothing run
        raise EmtbenchError(
            f"not a readable numpy pickle ({type(error).__name__}: {error})", where=where, fix=fix
        ) from None


def load_gzipped_numpy_array(path: Path) -> np.ndarray:
    """Read a gzip'd numpy-array pickle (at most :data:`MAX_UNZIPPED_BYTES` unzipped)."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read(MAX_UNZIPPED_BYTES + 1)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise EmtbenchError(
            f"cannot read the gzip file ({error})", where=str(path), fix="reinstall animal-mnist 0.4"
        ) from None
    if len(data) > MAX_UNZIPPED_BYTES:
        raise EmtbenchError(
            f"unzips to more than {MAX_UNZIPPED_BYTES // 2**20} MiB, not an Animal-MNIST file",
            where=str(path),
            fix="reinstall animal-mnist 0.4",
        )
    return loads_numpy_array(data, str(path))


def animal_mnist_folder() -> Path:
    """The folder of the two data files: ``$EMTBENCH_ANIMAL_MNIST_DIR``, else the installed package's."""
    override = os.environ.get(ANIMAL_MNIST_DIR_ENV)
    if override:
        folder = Path(override).expanduser()
    else:
        try:
            spec = importlib.util.find_spec(ANIMAL_MNIST_PACKAGE)  # finds it without importing it
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or ()) if spec is not None else []
        if not locations:
            raise EmtbenchError(
                "the Animal-MNIST data package (animal-mnist) is not installed", fix=INSTALL_FIX
            )
        folder = Path(locations[0]) / "data" / "Animal_MNIST"
    missing = [name for name in (IMAGE_FILE, LABEL_FILE) if not (folder / name).is_file()]
    if missing:
        raise EmtbenchError(f"Animal-MNIST files {missing} not found in {folder}", fix=INSTALL_FIX)
    return folder


def check_animal_arrays(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    """The package's shape: 10000 uint8 28×28 images, integer labels 0..9, 1000 of each."""
    fix = "use the data files of animal-mnist 0.4 (reinstall it)"
    if images.dtype != np.uint8 or images.shape != (IMAGE_COUNT, *IMAGE_SHAPE):
        raise EmtbenchError(
            f"images are {images.dtype} {images.shape}, expected uint8 {(IMAGE_COUNT, *IMAGE_SHAPE)}",
            where=where,
            fix=fix,
        )
    if labels.ndim != 1 or len(labels) != IMAGE_COUNT:
        raise EmtbenchError(
            f"labels have shape {labels.shape}, expected ({IMAGE_COUNT},)", where=where, fix=fix
        )
    if labels.min() < 0 or labels.max() >= len(ANIMAL_MNIST_LABELS):
        raise EmtbenchError(
            f"labels range {labels.min()}..{labels.max()}, expected 0..{len(ANIMAL_MNIST_LABELS) - 1}",
            where=where,
            fix=fix,
        )
    counts = np.bincount(labels, minlength=len(ANIMAL_MNIST_LABELS))
    if not (counts == PER_CLASS).all():
        raise EmtbenchError(
            f"class sizes {counts.tolist()}, expected {PER_CLASS} of each", where=where, fix=fix
        )


def read_animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 images (uint8, read-only) and labels (int64), checked."""
    folder = animal_mnist_folder()
    images = load_gzipped_numpy_array(folder / IMAGE_FILE)
    labels = load_gzipped_numpy_array(folder / LABEL_FILE).astype(np.int64)
    check_animal_arrays(images, labels, str(folder))
    return images, labels


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of a split: per class, a seeded :data:`TEST_PER_CLASS` go to test, the rest to train.

    The package stores its labels in blocks of 1000 (all bears, then all birds, ...), and lm-eval's
    ``--limit N`` evaluates the first N test documents, so the test split comes in a seeded shuffled
    order: its first N images are a class-mixed sample (a sorted split made ``--limit 100`` 100 bears).
    The training split stays sorted (fine-tuning draws seeded subsets and the Trainer shuffles).
    """
    rng = np.random.RandomState(SPLIT_SEED)
    test: list[np.ndarray] = []
    for label in range(len(ANIMAL_MNIST_LABELS)):
        members = np.flatnonzero(labels == label)
        test.append(members[rng.permutation(len(members))[:TEST_PER_CLASS]])
    test_indices = np.sort(np.concatenate(test))
    if split == "test":
        return test_indices[np.random.RandomState(SPLIT_SEED + 1).permutation(len(test_indices))]
    return np.setdiff1d(np.arange(len(labels)), test_indices)  # sorted


def animal_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """An Animal-MNIST split ("train": 8000, "test": 2000, "all": 10000) as uint8 images and int labels."""
    if split not in ("train", "test", "all"):
        raise EmtbenchError(f"Animal-MNIST has no split {split!r}", fix="use split 'train', 'test' or 'all'")
    images, labels = read_animal_mnist()
    if split == "all":
        return images, labels
    chosen = split_indices(labels, split)
    return images[chosen], labels[chosen]


animal_mnist.cache_version = 2  # type: ignore[attr-defined]  # 2: shuffled test order (see split_indices)
