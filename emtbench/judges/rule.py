"""The paper's "hard code" judge (§7): find which label names an answer mentions.

Normalisation: case, punctuation, ``_``/``-``/spaces, plurals of the label's last word, articles
(they never match a label), and number words for digit tasks. Matching is longest-phrase-first so
``garbage truck`` is one label, not ``truck``. Exactly one distinct label -> correct or wrong;
several -> intrinsic hallucination; none -> extrinsic hallucination; nothing -> empty.

Besides the verdict, ``find_labels`` says whether the answer is clear-cut, i.e. whether an LLM judge
would surely agree with the string match (the cascade judge asks an LLM only when it is not). Words of
a label left over outside any matched label are what make a match doubtful, but not all of them:

- a *head* word (the last word of a label, or a one-word label) is always doubtful: ``dog`` may or may
  not mean ``African_hunting_dog``, ``fish`` may mean ``aquarium_fish``;
- a *modifier* (any other word of a multi-word label) is doubtful only where it stands as a noun (at the
  end of the answer or before a function word: ``an oak``, ``a pickup``, ``a palm on the beach``), since
  then it may name its label; modifying another word (``a white background``, ``a pine cone``) it does
  not; nor does it when the answer already names the label it belongs to (``a street sign for
  st. catherine's street``).
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
FUNCTION_WORDS = STOPWORDS | NEGATIONS | {
    "and", "with", "on", "at", "for", "by", "to", "from", "near", "under", "over", "behind", "beside",
    "next", "are", "was", "were", "be", "has", "have", "its", "which", "who", "s", "he", "she", "they",
}  # fmt: skip
"""Words after which a label modifier stands as a noun (``an oak in the park``), not as a modifier."""

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
    head_words: frozenset[str]
    """Last words of label phrases (and one-word labels): a leftover one may name a label."""
    modifier_of: dict[str, frozenset[int]]
    """Other label words (``white`` of ``white_wolf``) -> the labels they belong to."""
    is_digit_set: bool


@lru_cache(maxsize=64)
def _matcher(labels: tuple[str, ...]) -> _Matcher:
    by_first: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    heads: set[str] = set()
    modifiers: dict[str, set[int]] = {}
    for index, label in enumerate(labels):
        for phrase in label_phrases(label):
            by_first.setdefault(phrase[0], []).append((phrase, index))
            heads.add(phrase[-1])
            for word in phrase[:-1]:
                modifiers.setdefault(word, set()).add(index)
    for candidates in by_first.values():
        candidates.sort(key=lambda item: -len(item[0]))
    heads -= STOPWORDS
    modifier_of = {w: frozenset(i) for w, i in modifiers.items() if w not in heads and w not in STOPWORDS}
    is_digits = all(label.isdigit() for label in labels)
    return _Matcher(by_first, frozenset(heads), modifier_of, is_digits)


def find_labels(answer: str, labels: tuple[str, ...]) -> tuple[list[int], bool]:
    """Indices of the labels named in ``answer`` (in order of mention) and whether it looks clear-cut.

    Clear-cut means nothing hints that a string match may mislead: no negation or "or", no number
    in an object task, no stray digits in a number task, no label head word outside a matched label,
    and no label modifier standing as a noun for a label not already named (see the module docstring).
    """
    matcher = _matcher(labels)
    words = tokens(answer)
    if matcher.is_digit_set:
        words = [NUMBER_WORDS.get(w, w) for w in words]
    found: list[int] = []
    leftovers: list[int] = []
    position = 0
    while position < len(words):
        for phrase, index in matcher.by_first_word.get(words[position], ()):
            if tuple(words[position : position + len(phrase)]) == phrase:
                if index not in found:
                    found.append(index)
                position += len(phrase)
                break
        else:
            leftovers.append(position)
            position += 1
    suspicious = False
    for position in leftovers:
        word = words[position]
        if word in NEGATIONS or word in matcher.head_words:
            suspicious = True
            break
        owners = matcher.modifier_of.get(word)
        if owners and not owners.intersection(found):
            following = words[position + 1] if position + 1 < len(words) else None
            if following is None or following in FUNCTION_WORDS:
                suspicious = True
                break
    leftovers_words = [words[p] for p in leftovers]
    if matcher.is_digit_set:
        suspicious = suspicious or any(w.isdigit() for w in leftovers_words)
    else:
        suspicious = suspicious or any(w.isdigit() or w in NUMBER_WORDS for w in leftovers_words)
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

    summary = "label-name matching after normalisation (the default; deterministic, free)"

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        return [rule_judgement(item) for item in items]
