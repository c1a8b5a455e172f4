"""Rehearsal: a seeded share of every earlier task's training data mixed into the current task's."""

from __future__ import annotations

import random
from collections.abc import Sequence

from emtbench.core.errors import EmtbenchError
from emtbench.methods.finetune.data import load_conversations


def rehearsal_sample(data, fraction: float, seed: int):
    """A seeded random ``fraction`` of ``data`` (at least one example) for rehearsal."""
    if not 0.0 < fraction <= 1.0:
        raise EmtbenchError(
            f"rehearsal fraction must be in (0, 1], got {fraction}", where="--rehearsal-fraction"
        )
    count = min(len(data), max(1, round(fraction * len(data))))
    return data.select(sorted(random.Random(seed).sample(range(len(data)), count)))


def build_training_data(
    data_spec: str,
    *,
    rehearsal_specs: Sequence[str] = (),
    rehearsal_fraction: float = 0.01,
    image_root: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    prompt: str = "short",
):
    """The current task's conversations plus a seeded share of every rehearsal task's (``prompt``: see
    :func:`~emtbench.methods.finetune.data.load_conversations`)."""
    import datasets

    current = load_conversations(data_spec, image_root=image_root, limit=limit, seed=seed, prompt=prompt)
    parts = [current]
    counts = {data_spec: len(current)}
    for index, spec in enumerate(rehearsal_specs):
        earlier = load_conversations(spec, image_root=image_root, limit=limit, seed=seed, prompt=prompt)
        chosen = rehearsal_sample(earlier, rehearsal_fraction, seed + 1 + index)
        parts.append(chosen)
        counts[f"rehearsal:{spec}"] = len(chosen)
    mixed = datasets.concatenate_datasets(parts) if len(parts) > 1 else current
    return mixed.shuffle(seed=seed) if len(parts) > 1 else mixed, counts
