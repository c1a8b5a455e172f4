"""``emt_stdlib_ppl``: a language-forgetting probe that needs no Hub (the offline counterpart of ``emt_linguistic``).

The text is the module docstrings of a fixed list of pure-Python standard-library modules, read from
their source files with :mod:`ast` (so ``python -OO`` does not empty it) in the order of
:data:`STDLIB_MODULES`. Every Python installation has it, but docstrings change between Python
versions: each document records the Python version and a digest of the whole text, so two runs are
only comparable when both match. Scored like lm-eval's ``wikitext``: ``loglikelihood_rolling`` per
module, word/byte perplexity and bits per byte (words split on whitespace, bytes in UTF-8).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import platform
import re
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError

STDLIB_MODULES: tuple[str, ...] = (
    "heapq", "tempfile", "getopt", "collections", "copy", "ast", "json", "argparse",
    "statistics", "re", "timeit", "uuid", "inspect", "subprocess", "random", "difflib",
    "pprint", "string", "optparse", "typing",
)  # fmt: skip
"""Pure-Python modules with a long module docstring, in evaluation order (never reorder: it is the text).

Mostly-prose docstrings of moderate length come first, so ``--limit N`` (the first N modules) is a
small but natural sample: the first 4 are about 3.8 KB, all 20 about 32.6 KB (Python 3.11).
"""


def module_docstring(name: str) -> str:
    """The module's docstring as written in its source file (``inspect.cleandoc``-ed), never from ``__doc__``."""
    spec = importlib.util.find_spec(name)
    origin = getattr(spec, "origin", None)
    if spec is None or not origin or not str(origin).endswith(".py") or not Path(origin).is_file():
        raise EmtbenchError(
            f"the source file of the standard-library module {name!r} is missing ({origin!r})",
            where="emt_stdlib_ppl",
            fix="use a Python installation that ships the standard library's .py files "
            "(e.g. Debian's libpython3-stdlib, not only .pyc files)",
        )
    source = Path(origin).read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source, filename=origin), clean=True)
    if not docstring:
        raise EmtbenchError(f"{origin} has no module docstring", where="emt_stdlib_ppl")
    return docstring


def stdlib_documents(modules: tuple[str, ...] = STDLIB_MODULES) -> list[dict[str, Any]]:
    """One document per module, each carrying the Python version and the digest of the whole text."""
    texts = [module_docstring(name) for name in modules]
    digest = hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest()[:16]
    version = platform.python_version()
    return [
        {"module": name, "text": text, "python_version": version, "corpus_sha256": digest}
        for name, text in zip(modules, texts, strict=True)
    ]


def load_stdlib_dataset(**_metadata: Any):
    """``custom_dataset`` hook; lm-eval passes the task's metadata and model args, none of which apply."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(stdlib_documents())})


def doc_to_target(doc: dict[str, Any]) -> str:
    return doc["text"]


def process_results(doc: dict[str, Any], results: list[float]) -> dict[str, tuple[float, int]]:
    """Per-module (loglikelihood, count) pairs; lm-eval's weighted aggregations turn them into perplexities."""
    (loglikelihood,) = results
    words = len(re.split(r"\s+", doc["text"].strip()))
    size = len(doc["text"].encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, words),
        "byte_perplexity": (loglikelihood, size),
        "bits_per_byte": (loglikelihood, size),
    }
