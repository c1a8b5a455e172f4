"""The EMT classification datasets: where they live, their labels and their prompts (EMT §4, App. C.1; docs/design.md §2).

A :class:`EMTDataset` is the single source of truth for a task; the lm-eval YAML files only name
the dataset, so prompts, label lists and loaders can never drift apart. A new dataset is one entry
in :data:`DATASETS` plus one task YAML (``tasks/emt/emt_<name>.yaml``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from typing import Literal

from emtbench.core.registry import Registry

DIGIT_LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))
CIFAR10_LABELS: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_LABELS: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
FASHION_MNIST_LABELS: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

ANIMAL_MNIST_LABELS: tuple[str, ...] = (
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
)  # fmt: skip
"""Animal-MNIST label i = the i-th class of its package description's (alphabetical) list, lower-cased
(the package has no table; :mod:`emtbench.datasets.animal_mnist` says how the order was checked)."""

NUMBER_PROMPT = "What is the number in the image? Please only answer a single number in {labels}."
OBJECT_PROMPT = "What is the object in the image? Please only answer a single object in {labels}."
NUMBER_ANSWER = "The number is {label}."
OBJECT_ANSWER = "The object is a(n) {label}."
"""Fine-tuning answers of the EMT paper (Appendix D.1); rendered with the spoken label name."""


def _miniimagenet_table() -> list[dict]:
    text = resources.files("emtbench.datasets").joinpath("data/miniimagenet_classes.json").read_text()
    return json.loads(text)["classes"]


def spoken(label: str) -> str:
    """A label as it appears in prompts: underscores rendered as spaces (EMT App. C.1)."""
    return label.replace("_", " ")


@dataclass(frozen=True)
class EMTDataset:
    """One EMT probe: data source, label list in label-index order, and prompt style."""

    name: str
    hub_id: str | None
    image_column: str
    label_column: str
    kind: Literal["number", "object"]
    default_split: str = "test"
    offline_source: str | None = None
    """Name of a loader in :mod:`emtbench.datasets.offline` that needs no Hub, if there is one."""
    prompt_order: Literal["label", "alphabetical"] = "label"
    label_source: str = ""
    label_names: Callable[[], tuple[str, ...]] = field(default=lambda: (), compare=False, repr=False)
    """The raw label names in label-index order (a function, so large tables load on first use)."""
    label_wnids: Callable[[], tuple[str, ...]] | None = field(default=None, compare=False, repr=False)
    """WordNet ids per label, for ImageNet-derived sets."""

    @property
    def task(self) -> str:
        return f"emt_{self.name}"

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """Raw label names (``aquarium_fish``), index i = dataset label i."""
        return tuple(self.label_names())

    @cached_property
    def wnids(self) -> tuple[str, ...] | None:
        """WordNet ids per label for ImageNet-derived sets, so ``n01532829`` folders are understood."""
        return None if self.label_wnids is None else tuple(self.label_wnids())

    @cached_property
    def prompt(self) -> str:
        """The paper's prompt (Appendix C.1), character for character."""
        names = list(self.labels)
        if self.prompt_order == "alphabetical":
            names = sorted(names)
        template = NUMBER_PROMPT if self.kind == "number" else OBJECT_PROMPT
        return template.format(labels=", ".join(spoken(n) for n in names))

    def answer(self, label_index: int) -> str:
        """The fine-tuning target sentence for a label (Appendix D.1)."""
        template = NUMBER_ANSWER if self.kind == "number" else OBJECT_ANSWER
        return template.format(label=spoken(self.labels[label_index]))


DATASETS: Registry[EMTDataset] = Registry("EMT dataset")
"""Every EMT dataset by name (``cifar10``); :func:`get_dataset` also takes ``emt_cifar10`` and ``emt:cifar10``."""
for _dataset in (
    EMTDataset("mnist", "ylecun/mnist", "image", "label", "number", label_names=lambda: DIGIT_LABELS),
    EMTDataset("cifar10", "uoft-cs/cifar10", "img", "label", "object", label_names=lambda: CIFAR10_LABELS),
    EMTDataset(
        "cifar100", "uoft-cs/cifar100", "img", "fine_label", "object", label_names=lambda: CIFAR100_LABELS
    ),
    # The paper lists miniImageNet labels "African hunting dog, ..., yawl": Python's sorted() order.
    EMTDataset(
        "miniimagenet", "timm/mini-imagenet", "image", "label", "object", prompt_order="alphabetical",
        label_names=lambda: tuple(c["name"] for c in _miniimagenet_table()),
        label_wnids=lambda: tuple(c["wnid"] for c in _miniimagenet_table()),
    ),
    EMTDataset(
        "fashion_mnist", "zalando-datasets/fashion_mnist", "image", "label", "object",
        offline_source="fashion_mnist_debian", label_names=lambda: FASHION_MNIST_LABELS,
    ),
    EMTDataset(
        "digits", None, "image", "label", "number", offline_source="sklearn_digits",
        label_names=lambda: DIGIT_LABELS,
    ),
    # A fine-tuning target the flagship base was not aligned on (PyPI animal-mnist 0.4, no Hub copy).
    EMTDataset(
        "animal_mnist", None, "image", "label", "object", offline_source="animal_mnist",
        label_names=lambda: ANIMAL_MNIST_LABELS,
    ),
):  # fmt: skip
    DATASETS.add(_dataset.name, _dataset)

PAPER_TASKS = ("emt_mnist", "emt_cifar10", "emt_cifar100", "emt_miniimagenet")
OFFLINE_TASKS = ("emt_digits", "emt_fashion_mnist")


def get_dataset(name_or_task: str) -> EMTDataset:
    """Look a dataset up by ``cifar10``, ``emt_cifar10`` or ``emt:cifar10``."""
    key = name_or_task.removeprefix("emt:").removeprefix("emt_")
    if key not in DATASETS:
        raise DATASETS.unknown(name_or_task)
    return DATASETS[key]
