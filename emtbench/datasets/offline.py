"""Image sources that need no model hub: scikit-learn's digits, Debian's Fashion-MNIST files, PyPI's Animal-MNIST."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emtbench.core.errors import EmtbenchError
from emtbench.core.registry import Registry
from emtbench.datasets.animal_mnist import animal_mnist

FASHION_MNIST_DIR_ENV = "EMTBENCH_FASHION_MNIST_DIR"
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

DIGITS_TEST_SIZE = 360
"""scikit-learn's digits have no split; a fixed seeded 360-image (20%) hold-out is the test split."""
DIGITS_SPLIT_SEED = 0


def _read_idx(path: Path, header_bytes: int, shape: tuple[int, ...]) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_bytes)
    return data.reshape((-1, *shape))


def fashion_mnist_debian(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (uint8 28×28 images, int labels) from the ``dataset-fashion-mnist`` package."""
    if split not in _FASHION_FILES:
        raise EmtbenchError(f"Fashion-MNIST has no split {split!r}", fix="use split 'train' or 'test'")
    folder = Path(os.environ.get(FASHION_MNIST_DIR_ENV, DEFAULT_FASHION_MNIST_DIR))
    image_file, label_file = (folder / name for name in _FASHION_FILES[split])
    if not image_file.is_file() or not label_file.is_file():
        raise EmtbenchError(
            f"offline Fashion-MNIST files not found in {folder}",
            fix="install them with `apt-get install dataset-fashion-mnist`, point "
            f"{FASHION_MNIST_DIR_ENV} at a folder holding the IDX .gz files, or pass a data_dir",
        )
    images = _read_idx(image_file, 16, (28, 28))
    labels = _read_idx(label_file, 8, ()).astype(np.int64)
    if len(images) != len(labels):
        raise EmtbenchError(
            f"{image_file} holds {len(images)} images but {label_file} {len(labels)} labels",
            fix="reinstall dataset-fashion-mnist",
        )
    return images, labels


def sklearn_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8×8 digits scaled from 0..16 to 0..255, split by a fixed seed."""
    from sklearn.datasets import load_digits

    if split not in ("train", "test", "all"):
        raise EmtbenchError(f"digits has no split {split!r}", fix="use split 'train', 'test' or 'all'")
    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    if split == "all":
        return images, labels
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(labels))
    chosen = order[:DIGITS_TEST_SIZE] if split == "test" else order[DIGITS_TEST_SIZE:]
    chosen = np.sort(chosen)
    return images[chosen], labels[chosen]


OFFLINE_SOURCES: Registry[Callable[[str], tuple[np.ndarray, np.ndarray]]] = Registry("offline source")
"""Loaders that need no Hub, by the name an :class:`~emtbench.datasets.emt.EMTDataset` gives as ``offline_source``."""
OFFLINE_SOURCES.add("fashion_mnist_debian", fashion_mnist_debian)
OFFLINE_SOURCES.add("sklearn_digits", sklearn_digits)
OFFLINE_SOURCES.add("animal_mnist", animal_mnist)
