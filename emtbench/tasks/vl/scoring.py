"""Reference scoring of the vision-language suite (docs/design.md §6), as TRI-ML vlm-evaluation scores it.

VQAv2 and TextVQA use the official VQA soft accuracy and answer normalisation; GQA uses exact match
after stripping punctuation and lower-casing; RefCOCO* counts a box as correct at IoU ≥ 0.5, and an
answer that does not parse as a normalised ``[x1, y1, x2, y2]`` box as wrong.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Callable, Sequence

# The official VQA evaluation's word maps (VQA eval script, also used by TextVQA's EvalAI processor).
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
# Missing apostrophes restored, as the official list does ("dont" -> "don't"). Answers are lower-cased
# before the lookup, so the official list's few capitalised keys ("Im", "Ive") can never match; they
# are left out here.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
# The official script's period pattern, "(?!<=\d)(\.)(?!\d)", means "a period not followed by a digit"
# (its look-behind is mistyped); this is that behaviour, so "2.5" keeps its period and "yes." loses it.
_PERIOD = re.compile(r"\.(?!\d)")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")


def process_punctuation(text: str) -> str:
    """Official VQA rule: a mark next to a space (or any text with a digit group like 1,000) is
    deleted, otherwise it becomes a space ("black-and-white" -> "black and white")."""
    delete = _DIGIT_COMMA_DIGIT.search(text) is not None
    processed = text
    for mark in PUNCTUATION:
        if delete or f"{mark} " in text or f" {mark}" in text:
            processed = processed.replace(mark, "")
        else:
            processed = processed.replace(mark, " ")
    return _PERIOD.sub("", processed)


def process_digits_articles_contractions(text: str) -> str:
    """Lower-case; number words become digits ("two" -> "2"); articles go; contractions get their apostrophe."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_vqa_answer(text: str) -> str:
    """A model's VQAv2 answer as the official evaluation compares it."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digits_articles_contractions(process_punctuation(text))


def normalize_textvqa_answer(text: str) -> str:
    """TextVQA's EvalAI processor: the VQA normalisation after dropping commas and '?' and splitting "'s"."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return normalize_vqa_answer(text)


def vqa_soft_accuracy(
    prediction: str,
    human_answers: Sequence[str],
    *,
    normalize_prediction: Callable[[str], str] = normalize_vqa_answer,
    normalize_reference: Callable[[str], str] = process_punctuation,
) -> float:
    """min(1, matches/3) averaged over the leave-one-out subsets of the human answers.

    For each human answer, count how many of the *other* answers equal the prediction; the official
    VQAv2 script normalises references by punctuation only (they were normalised at collection time),
    TextVQA normalises them like the prediction.
    """
    if not human_answers:
        return 0.0
    predicted = normalize_prediction(prediction)
    references = [normalize_reference(answer) for answer in human_answers]
    matches = sum(reference == predicted for reference in references)
    total = 0.0
    for reference in references:
        others_matching = matches - (reference == predicted)
        total += min(1.0, others_matching / 3)
    return total / len(references)


def textvqa_soft_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    return vqa_soft_accuracy(
        prediction,
        human_answers,
        normalize_prediction=normalize_textvqa_answer,
        normalize_reference=normalize_textvqa_answer,
    )


_STRIP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def gqa_exact_match(prediction: str, answer: str) -> float:
    """GQA: the prediction without ASCII punctuation, lower-cased, equals the (already clean) answer."""
    return float(prediction.strip().translate(_STRIP_PUNCTUATION).lower() == answer)


Box = tuple[float, float, float, float]


def parse_box(text: str) -> Box | None:
    """A normalised ``[x1, y1, x2, y2]`` box, or None when the answer is not one.

    As in the reference: a Python/JSON list literal of four numbers, each in [0, 1], with
    x1 < x2 and y1 < y2; anything else (prose, swapped corners, pixel coordinates) is unparseable.
    """
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list) or len(value) != 4:
        return None
    if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in value):
        return None
    x1, y1, x2, y2 = (float(c) for c in value)
    if not all(0.0 <= c <= 1.0 for c in (x1, y1, x2, y2)) or not (x1 < x2 and y1 < y2):
        return None
    return (x1, y1, x2, y2)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes; touching boxes share no area."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def normalized_reference_box(bbox_xywh: Sequence[float], width: float, height: float) -> list[float]:
    """COCO's pixel ``[x, y, w, h]`` as the reference stores it: ``[x1, y1, x2, y2]`` / image size, 2 decimals."""
    x, y, w, h = (float(c) for c in bbox_xywh)
    return [round(x / width, 2), round(y / height, 2), round((x + w) / width, 2), round((y + h) / height, 2)]


def refcoco_scores(
    prediction: str, reference_box: Sequence[float], threshold: float = 0.5
) -> dict[str, float]:
    """``acc`` (IoU ≥ threshold), ``iou`` (0 when unparseable) and ``unparseable`` for one answer."""
    box = parse_box(prediction)
    if box is None:
        return {"acc": 0.0, "iou": 0.0, "unparseable": 1.0}
    iou = box_iou(box, reference_box)
    return {"acc": float(iou >= threshold), "iou": iou, "unparseable": 0.0}
