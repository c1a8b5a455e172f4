"""Builders of tiny models and generated results for tests and benchmark scripts (never used at run time).

:mod:`.models` builds tiny random checkpoints through the real save/load path, :mod:`.leaderboard`
writes lm-eval-shaped results files.
"""

from emtbench.testing.models import (
    LLAVA_CHAT_TEMPLATE,
    build_tiny_clip,
    build_tiny_flagship,
    build_tiny_instructblip,
    build_tiny_llava,
    build_tiny_tokenizer,
)

__all__ = [
    "LLAVA_CHAT_TEMPLATE",
    "build_tiny_clip",
    "build_tiny_flagship",
    "build_tiny_instructblip",
    "build_tiny_llava",
    "build_tiny_tokenizer",
]
