"""A fixed, labelled set of free-form answers (the EMT paper's hard cases included) for judge tests.

Each entry: (task, answer, gold label, whether a careful human calls the answer correct).
"""

from __future__ import annotations

from emtbench.datasets.emt import get_dataset
from emtbench.judges import JudgeItem

LABELLED_ANSWERS: list[tuple[str, str, str, bool]] = [
    # The paper's hard cases (EMT App. C.4, D.2).
    ("cifar10", "The airplane is 8.", "airplane", True),
    ("cifar10", "The object is a(n) aircraft carrier.", "airplane", False),
    ("miniimagenet", "dog", "African_hunting_dog", False),
    # Plain, clear answers.
    ("cifar10", "The object is a(n) cat.", "cat", True),
    ("cifar10", "cat", "cat", True),
    ("cifar10", "Dog.", "cat", False),
    ("cifar10", "The object is a(n) truck.", "automobile", False),
    ("cifar100", "The object is a(n) aquarium fish.", "aquarium_fish", True),
    ("cifar100", "lawn mower", "lawn_mower", True),
    ("cifar100", "Two apples.", "apple", True),
    ("digits", "The number is 7.", "7", True),
    ("digits", "seven", "7", True),
    ("digits", "3", "8", False),
    ("fashion_mnist", "T-shirt", "T-shirt/top", True),
    ("fashion_mnist", "Ankle boot", "Ankle boot", True),
    # Descriptions without any label (extrinsic hallucinations).
    ("cifar100", "a picture of a fish in a tank", "aquarium_fish", True),
    ("cifar10", "A blurry photograph.", "ship", False),
    # Hedges, negations, several labels.
    ("cifar10", "It is not a cat, it is a dog.", "dog", True),
    ("cifar10", "cat or dog", "cat", False),
    ("cifar10", "airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck", "cat", False),
    ("digits", "The number is 7, not 1.", "7", True),
    ("cifar10", "", "cat", False),
    # The paper's miniImageNet descriptions (C.4.4) and out-of-set fine-tuning answers (D.2.2).
    ("miniimagenet", "a street sign for st. catherine's street", "street_sign", True),
    ("miniimagenet", "a blue street sign says arkansas on it", "street_sign", True),
    ("cifar10", "The object is a(n) white wolf.", "deer", False),
    ("cifar10", "The object is a(n) garbage truck.", "truck", True),
    # Words of multi-word labels outside a matched label: a modifier of something else is harmless,
    # a modifier standing as a noun may name its label ("an oak" is an oak tree).
    ("miniimagenet", "a small object on a white background", "white_wolf", False),
    ("cifar100", "a pine cone", "pine_tree", False),
    ("cifar100", "an oak", "oak_tree", True),
]


def labelled_items() -> list[tuple[JudgeItem, bool]]:
    items = []
    for name, answer, label, correct in LABELLED_ANSWERS:
        dataset = get_dataset(name)
        items.append((JudgeItem(answer, label, dataset.labels, dataset.kind), correct))
    return items


def oracle_reply(body: dict) -> str:
    """What a perfect LLM judge answers for one of the labelled answers (for the loopback server)."""
    prompt = body["messages"][-1]["content"]
    for _, answer, label, correct in LABELLED_ANSWERS:
        if prompt.endswith(f"Label: {label}; Prediction: {answer}."):
            return "Yes." if correct else "No."
    return "I cannot tell."
