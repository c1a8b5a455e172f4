"""The soft-target loss of the continual-learning paper (App. A.5), as a ``Trainer`` loss hook."""

from __future__ import annotations

from collections.abc import Callable

from emtbench.methods.finetune.data import IGNORE_INDEX


def soft_target_loss(logits, labels, alpha: float, num_items_in_batch=None):
    """Cross-entropy against (1−α) on the target token and α/(V−1) on every other token (SPEC §3).

    ``logits`` are the model's (batch, seq, V) outputs and ``labels`` the unshifted labels (-100 =
    ignore). The sum over valid tokens is divided by their number (or by ``num_items_in_batch``, the
    Trainer's count across gradient-accumulation steps), so α = 0 is exactly the model's own
    cross-entropy; the paper's released code divides by all positions instead.
    """
    import torch

    shift_logits = logits[..., :-1, :].float()
    shift_labels = labels[..., 1:].to(shift_logits.device)
    valid = shift_labels != IGNORE_INDEX
    log_probs = torch.log_softmax(shift_logits[valid], dim=-1)
    targets = shift_labels[valid]
    vocab = log_probs.shape[-1]
    target_log_prob = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    off_target_weight = alpha / (vocab - 1)
    per_token = -(1.0 - alpha - off_target_weight) * target_log_prob - off_target_weight * log_probs.sum(-1)
    count = num_items_in_batch if num_items_in_batch is not None else valid.sum()
    if isinstance(count, torch.Tensor):
        count = count.to(per_token.device)
    return per_token.sum() / count


def make_compute_loss_func(alpha: float) -> Callable:
    """The ``Trainer(compute_loss_func=...)`` hook for the soft-target loss."""

    def compute_loss(outputs, labels, num_items_in_batch=None):
        return soft_target_loss(outputs.logits, labels, alpha, num_items_in_batch)

    return compute_loss
