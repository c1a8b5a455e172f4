"""Target-task loss probe shared by the fusion tests (no Hub, a few CPU seconds)."""

from __future__ import annotations

from pathlib import Path

import torch


def target_loss(model_dir: Path, spec: str, *, split: str = "test", samples: int = 32) -> float:
    """Mean answer-token loss on held-out target data."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from emtbench.methods.finetune.data import ConversationCollator, load_conversations

    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    collator = ConversationCollator(AutoProcessor.from_pretrained(model_dir))
    rows = load_conversations(spec, split=split, limit=samples, seed=123)
    losses, weights = [], []
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            batch = collator([rows[index] for index in range(start, min(start + 8, len(rows)))])
            count = int((batch["labels"][:, 1:] != -100).sum())
            losses.append(model(**batch).loss.item() * count)
            weights.append(count)
    return sum(losses) / sum(weights)
