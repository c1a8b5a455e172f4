"""The rule judge on the EMT paper's own examples (Appendix C.4, D.2 and §5.2) and normalisation rules."""

from __future__ import annotations

import pytest

from emtbench.datasets.emt import get_dataset
from emtbench.judges import JudgeItem, RuleJudge, Verdict
from emtbench.judges.rule import find_labels, label_phrases

MNIST = get_dataset("mnist").labels
CIFAR10 = get_dataset("cifar10").labels
CIFAR100 = get_dataset("cifar100").labels
MINI = get_dataset("miniimagenet").labels
FASHION = get_dataset("fashion_mnist").labels

# (answer, gold label, label list, verdict the rule judge must give, confident?)
PAPER_EXAMPLES = [
    # C.4.1 Otter on MNIST
    ("The object is a letter.", "2", MNIST, Verdict.EXTRINSIC, True),
    ("5.", "5", MNIST, Verdict.CORRECT, True),
    ("7.", "7", MNIST, Verdict.CORRECT, True),
    ("2.", "8", MNIST, Verdict.WRONG, True),
    ("Number 4.", "4", MNIST, Verdict.CORRECT, True),
    # C.4.2 LLaVA-7b on CIFAR-10
    ("The object in the image is a frog.", "airplane", CIFAR10, Verdict.WRONG, True),
    ("The object in the image is a large black bird.", "bird", CIFAR10, Verdict.CORRECT, True),
    ("The object in the image is a deer.", "deer", CIFAR10, Verdict.CORRECT, True),
    ("The object in the image is a large airplane.", "truck", CIFAR10, Verdict.WRONG, True),
    # §4.2: LENS echoes the label list (intrinsic); InstructBLIP describes (extrinsic in the paper)
    ("airplane, automobile, bird, cat, deer, dog, frog, horse,", "horse", CIFAR10, Verdict.INTRINSIC, True),
    # "tank" is a CIFAR-100 label, so a string matcher reads a wrong label; the partial "fish"
    # (aquarium fish) marks it as not clear-cut, so the cascade hands it to the LLM judge.
    ("a picture of a fish in a tank", "aquarium_fish", CIFAR100, Verdict.WRONG, False),
    # C.4.3 LENS on CIFAR-100
    ("bird", "orchid", CIFAR100, Verdict.EXTRINSIC, True),
    # C.4.4 InstructBLIP on miniImageNet
    # street_sign is the only label named; the second "street" only repeats a word of it, so the
    # answer is clear-cut (an LLM reading it has no other label to consider).
    ("a street sign for st. catherine's street", "street_sign", MINI, Verdict.CORRECT, True),
    ("a blue street sign says arkansas on it", "street_sign", MINI, Verdict.CORRECT, True),
    ("a picture of a coral reef with seaweed in the foreground", "coral_reef", MINI, Verdict.CORRECT, True),
    ("a close up of a tree branch with a ladybug on it", "harvestman", MINI, Verdict.WRONG, True),
    (
        "a dog is standing in front of a forest with a sign that says walker hound",
        "African_hunting_dog",
        MINI,
        Verdict.WRONG,
        False,
    ),
    # §5.2 fine-tuned LLaVA on CIFAR-10
    ("The object is an airplane.", "airplane", CIFAR10, Verdict.CORRECT, True),
    # "The airplane is 8.": the label is named, the stray digit is the hallucination a string
    # match cannot judge -- correct by rule, but flagged as not clear-cut.
    ("The airplane is 8.", "airplane", CIFAR10, Verdict.CORRECT, False),
    ("The object is a(n) butterfly.", "airplane", CIFAR10, Verdict.EXTRINSIC, True),
    ("The object is a(n) aircraft carrier.", "airplane", CIFAR10, Verdict.EXTRINSIC, True),
    # D.2.1 / D.2.2
    ("The object is a(n) automobile.", "truck", CIFAR10, Verdict.WRONG, True),
    (
        "The object is a(n) aircraft carrier. The object is a(n) aircraft carrier.",
        "airplane",
        CIFAR10,
        Verdict.EXTRINSIC,
        True,
    ),
    ("The object is a(n) black-footed ferret.", "cat", CIFAR10, Verdict.EXTRINSIC, True),
    ("The object is a(n) white wolf.", "deer", CIFAR10, Verdict.EXTRINSIC, True),
    ("The object is a(n) rhinoceros beetle.", "frog", CIFAR10, Verdict.EXTRINSIC, True),
    ("The object is a(n) garbage truck.", "truck", CIFAR10, Verdict.CORRECT, True),
    # the same answers on miniImageNet's own label set, where they are labels
    ("The object is a(n) aircraft carrier.", "aircraft_carrier", MINI, Verdict.CORRECT, True),
    ("The object is a(n) garbage truck.", "garbage_truck", MINI, Verdict.CORRECT, True),
]


@pytest.mark.parametrize(("answer", "label", "labels", "verdict", "confident"), PAPER_EXAMPLES)
def test_paper_examples(answer, label, labels, verdict, confident):
    judgement = RuleJudge().judge_one(JudgeItem(answer, label, labels))
    assert judgement.verdict is verdict
    assert judgement.confident is confident


@pytest.mark.parametrize(
    ("answer", "label", "labels", "verdict"),
    [
        ("", "cat", CIFAR10, Verdict.EMPTY),
        ("  ...  ", "cat", CIFAR10, Verdict.EMPTY),
        ("EIGHT", "8", MNIST, Verdict.CORRECT),  # number words, case
        ("The number is seven.", "7", MNIST, Verdict.CORRECT),
        ("1, 2 or 7", "7", MNIST, Verdict.INTRINSIC),
        ("10", "1", MNIST, Verdict.EXTRINSIC),  # 10 is not a label, and is not 1 and 0
        ("Two dogs.", "dog", CIFAR10, Verdict.CORRECT),  # plural
        ("some mice", "mouse", CIFAR100, Verdict.CORRECT),  # irregular plural
        ("two women", "woman", CIFAR100, Verdict.CORRECT),
        ("an aquarium-fish", "aquarium_fish", CIFAR100, Verdict.CORRECT),  # - and _ as spaces
        ("Aquarium_Fish", "aquarium_fish", CIFAR100, Verdict.CORRECT),
        ("a pickup truck", "pickup_truck", CIFAR100, Verdict.CORRECT),  # longest phrase wins
        ("a T-shirt", "T-shirt/top", FASHION, Verdict.CORRECT),  # '/' alternatives
        ("a shirt", "Shirt", FASHION, Verdict.CORRECT),  # not swallowed by T-shirt
        ("ankle boots", "Ankle boot", FASHION, Verdict.CORRECT),
        ("a category of cats", "cat", CIFAR10, Verdict.CORRECT),  # 'category' is not 'cat'
        ("It is a cat, not a dog.", "cat", CIFAR10, Verdict.INTRINSIC),
    ],
)
def test_normalisation(answer, label, labels, verdict):
    assert RuleJudge().judge_one(JudgeItem(answer, label, labels)).verdict is verdict


def test_negation_is_not_clear_cut():
    found, clear = find_labels("It is not a cat.", CIFAR10)
    assert found == [CIFAR10.index("cat")]
    assert clear is False


@pytest.mark.parametrize(
    ("answer", "labels", "clear"),
    [
        # head words (last word of a label, one-word labels) left over may name a label: not clear
        ("dog", MINI, False),  # African_hunting_dog? (the paper's own example)
        ("a fish in a bowl", CIFAR100, False),  # aquarium_fish?
        ("The object is a(n) white wolf.", CIFAR10, True),  # neither word is a CIFAR-10 label word
        ("The object is a(n) garbage truck.", CIFAR10, True),  # truck, with a non-label modifier
        ("a boot", FASHION, False),  # Ankle boot?
        # modifiers modifying something else are harmless
        ("a small object on a white background", MINI, True),  # white of white_wolf
        ("a pine cone", CIFAR100, True),  # pine of pine_tree
        ("a blue street sign says arkansas on it", MINI, True),
        # ... but a modifier standing as a noun may name its label: "an oak" is an oak tree
        ("an oak", CIFAR100, False),
        ("a palm on the beach", CIFAR100, False),
        ("The object is a(n) pickup.", CIFAR100, False),
        # a modifier of a label the answer already names adds no candidate
        ("a street sign for st. catherine's street", MINI, True),
        ("an oak tree, a sturdy oak", CIFAR100, True),
        ("The object is a(n) golden.", MINI, False),  # golden_retriever?
    ],
)
def test_leftover_label_words(answer, labels, clear):
    assert find_labels(answer, labels)[1] is clear


def test_label_phrases_cover_plural_and_alternatives():
    assert ("t", "shirt", "top") in label_phrases("T-shirt/top")
    assert ("top",) in label_phrases("T-shirt/top")
    assert ("buses",) in label_phrases("bus")
    assert ("butterflies",) in label_phrases("butterfly")
    assert label_phrases("7") == {("7",)}


def test_batch_judging_matches_one_by_one():
    judge = RuleJudge()
    items = [JudgeItem(a, label, labels) for a, label, labels, _, _ in PAPER_EXAMPLES]
    assert judge.judge(items) == [judge.judge_one(item) for item in items]
