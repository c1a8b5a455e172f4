"""The paper's "hard code" judge (§7): find which label names an answer mentions.

Normalisation: case, punctuation, ``_``/``-``/spaces, plurals of the label's last word, articles
(they never match a label), and number words for digit tasks. Matching is longest-phrase-first so
``garbage truck`` is one label, not ``truck``. Exactly one distinct label -> correct or wrong;
several -> intrinsic hallucination; none -> extrinsic hallucination; nothing -> empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from emtbench.judges.base import Judge, JudgeItem, Judgement, Verdict, register_judge

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "mouse": "mice", "child": "children", "person": "people",
    "goose": "geese", "foot": "feet", "tooth": "teeth", "fish": "fish", "sheep": "sheep",
    "deer": "deer", "cattle": "cattle", "knife": "knives", "wolf": "wolves", "leaf": "leaves",
    "shelf": "shelves", "baby": "babies", "butterfly": "butterflies", "cherry": "cherries",
}  # fmt: skip
NEGATIONS = {"not", "no", "isn", "isnt", "aren", "arent", "neither", "nor", "never", "or"}
STOPWORDS = {"a", "an", "the", "n", "of", "in", "is", "it", "this", "that", "image", "object", "number"}

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-case alphanumeric words; ``_``, ``-``, ``/`` and punctuation all separate words."""
    return _TOKEN.findall(text.lower())


def _plural(word: str) -> str:
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def label_phrases(label: str) -> set[tuple[str, ...]]:
    """Token sequences that name ``label``: itself, its plural, and each ``/`` alternative."""
    variants = {label, *label.split("/")} if "/" in label else {label}
    phrases: set[tuple[str, ...]] = set()
    for variant in variants:
        words = tuple(tokens(variant))
        if not words:
            continue
        phrases.add(words)
        if not words[-1].isdigit():
            phrases.add((*words[:-1], _plural(words[-1])))
    return phrases


@dataclass(frozen=True)
class _Matcher:
    by_first_word: dict[str, list[tuple[tuple[str, ...], int]]]
    label_words: frozenset[str]
    is_digit_set: bool


@lru_cache(maxsize=64)
def _matcher(labels: tuple[str, ...]) -> _Matcher:
    by_first: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    words: set[str] = set()
    for index, label in enumerate(labels):
        for phrase in label_phrases(label):
            by_first.setdefault(phrase[0], []).append((phrase, index))
            words.update(w for w in phrase if w not in STOPWORDS)
    for candidates in by_first.values():
        candidates.sort(key=lambda item: -len(item[0]))
    is_digits = all(label.isdigit() for label in labels)
    return _Matcher(by_first, frozenset(words), is_digits)


def find_labels(answer: str, labels: tuple[str, ...]) -> tuple[list[int], bool]:
    """Indices of the labels named in ``answer`` (in order of mention) and whether it looks clear-cut.

    Clear-cut means nothing hints that a string match may mislead: no negation or "or", no number
    in an object task, no stray digits in a number task, and no label word outside a matched label.
    """
    matcher = _matcher(labels)
    words = tokens(answer)
    if matcher.is_digit_set:
        words = [NUMBER_WORDS.get(w, w) for w in words]
    found: list[int] = []
    leftovers: list[str] = []
    position = 0
    while position < len(words):
        for phrase, index in matcher.by_first_word.get(words[position], ()):
            if tuple(words[position : position + len(phrase)]) == phrase:
                if index not in found:
                    found.append(index)
                position += len(phrase)
                break
        else:
            leftovers.append(words[position])
            position += 1
    suspicious = any(w in NEGATIONS for w in leftovers) or any(w in matcher.label_words for w in leftovers)
    if matcher.is_digit_set:
        suspicious = suspicious or any(w.isdigit() for w in leftovers)
    else:
        suspicious = suspicious or any(w.isdigit() or w in NUMBER_WORDS for w in leftovers)
    return found, not suspicious


def rule_judgement(item: JudgeItem) -> Judgement:
    if not tokens(item.answer):
        return Judgement(Verdict.EMPTY)
    found, clear = find_labels(item.answer, item.labels)
    matched = tuple(item.labels[i] for i in found)
    if not found:
        return Judgement(Verdict.EXTRINSIC, matched, confident=clear)
    if len(found) > 1:
        return Judgement(Verdict.INTRINSIC, matched, confident=clear)
    verdict = Verdict.CORRECT if matched[0] == item.label else Verdict.WRONG
    return Judgement(verdict, matched, confident=clear)


@register_judge("rule")
class RuleJudge(Judge):
    """Deterministic and free: label-name matching after normalisation."""

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        return [rule_judgement(item) for item in items]
