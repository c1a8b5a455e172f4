"""Post-training fusion: turn (pre-trained, fine-tuned) checkpoints into one fused checkpoint.

* :mod:`.tailor` - Model Tailor's per-layer algorithm on plain tensors (Model Tailor §4).
* :mod:`.driver` - runs it layer by layer through a real model with calibration data.
* :mod:`.merge` - baselines (DARE, task arithmetic, TIES, grafting) behind a name registry.
* :mod:`.cli` - the ``emtbench tailor`` and ``emtbench merge`` commands.
"""
