"""Model Tailor on one linear layer, on plain tensors (Zhu et al. 2024, §4).

A layer ``W`` (rows = outputs, columns = inputs) is fused from its pre-trained and fine-tuned values:
a sparse *patch* of fine-tuned weights is kept (mask ``M``), everything else is reverted to
pre-trained, and the kept weights are *compensated* (``C``) so that the layer output on the target
task's calibration inputs ``X`` stays close to the fine-tuned one:

    W = M ⊙ (W_ft + C) + (1 − M) ⊙ W_pre,     minimising ‖W_ft X − W X‖².

The work is SparseGPT's (Frantar & Alistarh 2023): ``H = (2/n) X Xᵀ``, the upper Cholesky factor
``U`` of ``H⁻¹`` gives, row ``i``, the inverse Hessian of the columns not yet processed, so the
columns can be reverted one at a time with an exact OBS update of the later columns. Inside a block
of ``blocksize`` columns the update is applied column by column; later blocks receive it lazily as
one matrix product ``Err · U[block, later]``, which is what makes the blocked version fast.

Compensation sign. Reverting column ``p`` changes its weights by ``c = q_p − w_p``; the remaining
columns ``r`` then minimise ``E(c, r) = c² H_pp + 2c H_pr r + rᵀ H_rr r`` at
``r* = −H_rr⁻¹ H_rp c``, which in terms of ``H⁻¹`` is ``r* = −((w_p − q_p) / [H⁻¹]_pp) · [H⁻¹]_{p,r}``
(OBS / Theorem 4.5 of the paper, SparseGPT's ``-=``). Model Tailor's released code *adds* the update
instead, i.e. applies ``−r*``: then ``E(c, −r*) = c² H_pp + 3·c² H_pr H_rr⁻¹ H_rp``, which is *worse*
than not compensating at all (``E(c, 0) = c² H_pp``). We therefore subtract (``compensation_sign=-1``);
``tests/test_tailor.py`` checks on random layers that this lowers ‖W_ft X − W X‖ below masking alone
while the released sign raises it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from emtbench.core.errors import EmtbenchError
from emtbench.methods.fusion.methods.model_tailor import SCORE_MODES, ScoreMode, TailorConfig

OBS_SIGN = -1
"""Sign of the OBS compensation update (see the module docstring); +1 reproduces the released code."""


@dataclass
class LayerTailoring:
    """Result for one layer and one task: the tailored weight and which entries kept fine-tuned values."""

    weight: torch.Tensor
    keep: torch.Tensor
    """Boolean mask M: True where the fine-tuned (compensated) value was kept."""


class HessianAccumulator:
    """Running ``H = (2/n) Σ x xᵀ`` over calibration tokens, fed batch by batch from forward hooks."""

    def __init__(self, columns: int, *, dtype: torch.dtype = torch.float32):
        self.sum = torch.zeros(columns, columns, dtype=dtype)
        self.count = 0

    def add(self, inputs: torch.Tensor) -> None:
        rows = inputs.reshape(-1, inputs.shape[-1]).to(self.sum.dtype)
        self.sum.addmm_(rows.T, rows)
        self.count += rows.shape[0]

    def hessian(self) -> torch.Tensor:
        if self.count == 0:
            raise EmtbenchError(
                "no calibration inputs reached this layer",
                fix="check that the calibration data is not empty and reaches the layers being tailored",
            )
        return self.sum * (2.0 / self.count)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64 (tests), float32 otherwise (bf16/fp16 weights included)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor U of the damped H⁻¹ (``U[i, i:]`` ∝ the inverse Hessian of columns ≥ i)."""
    hessian = hessian.clone()
    diagonal = torch.diagonal(hessian)
    dead = diagonal == 0
    diagonal[dead] = 1.0  # inputs that are always zero: any weight there is as good as another
    diagonal += damp * diagonal.mean()
    lower, info = torch.linalg.cholesky_ex(hessian)
    if info.item() != 0:
        raise EmtbenchError(
            "the calibration Hessian is not positive definite even after damping",
            fix="raise --damp (e.g. 0.1) or use more calibration samples",
        )
    inverse = torch.cholesky_inverse(lower)
    return torch.linalg.cholesky(inverse, upper=True)


def fusion_scores(
    current: torch.Tensor,
    pretrained: torch.Tensor,
    inverse_diagonal: torch.Tensor,
    *,
    omega: float,
    mode: ScoreMode,
) -> torch.Tensor:
    """Fused importance of each weight in a block (higher = keep the fine-tuned value).

    ``inverse_diagonal`` is U_ii² = [H_F⁻¹]_ii, the OBS denominator for the columns still to process.
    Salience is |w − w_pre| in both modes. Sensitivity is the paper's (w − w_pre)²/(2[H⁻¹]_ii) with
    min-max normalisation over the block (``paper``), or the released code's w²/U_ii² with a z-score
    per row of the block (``released``).
    """
    delta = current - pretrained
    salience = delta.abs()
    if mode == "paper":
        sensitivity = delta.square() / (2.0 * inverse_diagonal)
        return omega * _min_max(salience) + (1.0 - omega) * _min_max(sensitivity)
    if mode == "released":
        sensitivity = current.square() / inverse_diagonal
        return omega * _row_zscore(salience) + (1.0 - omega) * _row_zscore(sensitivity)
    raise EmtbenchError(f"unknown score mode {mode!r}", fix=f"use one of {', '.join(SCORE_MODES)}")


def _min_max(values: torch.Tensor) -> torch.Tensor:
    low, high = values.min(), values.max()
    spread = high - low
    return (values - low) / spread if spread > 0 else torch.zeros_like(values)


def _row_zscore(values: torch.Tensor) -> torch.Tensor:
    mean = values.mean(dim=1, keepdim=True)
    std = values.std(dim=1, keepdim=True, correction=0)
    return (values - mean) / std.clamp_min(torch.finfo(values.dtype).tiny)


def revert_count(numel: int, patch: float) -> int:
    """How many of ``numel`` weights are reverted: (1 − patch)·numel, rounded half up."""
    return min(numel, max(0, math.floor((1.0 - patch) * numel + 0.5)))


def revert_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Exactly ``count`` lowest-scoring entries (``topk`` picks exactly k even among tied scores)."""
    flat = scores.flatten()
    if count <= flat.numel() // 2:
        mask = torch.zeros(flat.numel(), dtype=torch.bool)
        if count > 0:
            mask[torch.topk(flat, count, largest=False, sorted=False).indices] = True
    else:
        mask = torch.ones(flat.numel(), dtype=torch.bool)
        keep = flat.numel() - count
        if keep > 0:
            mask[torch.topk(flat, keep, largest=True, sorted=False).indices] = False
    return mask.view_as(scores)


def _check_layer(pretrained: torch.Tensor, finetuned: torch.Tensor, hessian: torch.Tensor | None) -> None:
    if pretrained.shape != finetuned.shape or pretrained.dim() != 2:
        raise EmtbenchError(
            f"pre-trained {tuple(pretrained.shape)} and fine-tuned {tuple(finetuned.shape)} weights must be "
            "matrices of one shape"
        )
    if hessian is not None and hessian.shape != (pretrained.shape[1], pretrained.shape[1]):
        raise EmtbenchError(
            f"Hessian {tuple(hessian.shape)} does not match {pretrained.shape[1]} input columns"
        )


def tailor_layer(
    pretrained: torch.Tensor,
    finetuned: torch.Tensor,
    hessian: torch.Tensor | None,
    config: TailorConfig = TailorConfig(),
    *,
    compensation_sign: int = OBS_SIGN,
    factor: torch.Tensor | None = None,
) -> LayerTailoring:
    """Model Tailor on one layer: blocked score fusion, exact per-block revert share, OBS compensation.

    ``factor`` (from :func:`inverse_hessian_factor`) may replace ``hessian`` when layers share inputs.
    """
    _check_layer(pretrained, finetuned, hessian)
    dtype = compute_dtype(pretrained, finetuned, *([hessian] if factor is None else [factor]))
    pre = pretrained.to(dtype)
    work = finetuned.to(dtype).clone()
    if factor is None:
        if hessian is None:
            raise ValueError("give the layer's Hessian or its inverse-Hessian factor")
        factor = inverse_hessian_factor(hessian.to(dtype), config.damp)
    factor = factor.to(dtype)
    result = torch.empty_like(work)
    keep = torch.empty(work.shape, dtype=torch.bool)
    columns = work.shape[1]
    for start in range(0, columns, config.blocksize):
        end = min(start + config.blocksize, columns)
        block = work[:, start:end].clone()
        block_pre = pre[:, start:end]
        block_factor = factor[start:end, start:end]
        diagonal = torch.diagonal(block_factor)
        scores = fusion_scores(block, block_pre, diagonal.square(), omega=config.omega, mode=config.score)
        reverted = revert_mask(scores, revert_count(scores.numel(), config.patch))
        errors = torch.zeros_like(block)
        for column in range(end - start):
            weights = block[:, column]
            target = torch.where(reverted[:, column], block_pre[:, column], weights)
            result[:, start + column] = target
            error = (weights - target) / diagonal[column]
            block[:, column:] += compensation_sign * error.unsqueeze(1) * block_factor[column, column:]
            errors[:, column] = error
        work[:, end:] += compensation_sign * (errors @ factor[start:end, end:])
        keep[:, start:end] = ~reverted
    return LayerTailoring(weight=result.to(finetuned.dtype), keep=keep)


def tailor_layer_columnwise(
    pretrained: torch.Tensor,
    finetuned: torch.Tensor,
    hessian: torch.Tensor,
    config: TailorConfig = TailorConfig(),
) -> LayerTailoring:
    """Reference without lazy batching: each column's update goes to all later columns at once.

    Same masks and same arithmetic as :func:`tailor_layer`; only the order of the updates differs, so
    the results agree to rounding. ``scripts/bench_tailor.py`` measures the speed-up of the blocked form.
    """
    _check_layer(pretrained, finetuned, hessian)
    dtype = compute_dtype(pretrained, finetuned, hessian)
    pre = pretrained.to(dtype)
    work = finetuned.to(dtype).clone()
    factor = inverse_hessian_factor(hessian.to(dtype), config.damp)
    keep = torch.ones(work.shape, dtype=torch.bool)
    columns = work.shape[1]
    for column in range(columns):
        if column % config.blocksize == 0:
            end = min(column + config.blocksize, columns)
            diagonal = torch.diagonal(factor)[column:end]
            scores = fusion_scores(
                work[:, column:end],
                pre[:, column:end],
                diagonal.square(),
                omega=config.omega,
                mode=config.score,
            )
            keep[:, column:end] = ~revert_mask(scores, revert_count(scores.numel(), config.patch))
        weights = work[:, column].clone()
        target = torch.where(keep[:, column], weights, pre[:, column])
        error = (weights - target) / factor[column, column]
        work[:, column:] += OBS_SIGN * error.unsqueeze(1) * factor[column, column:]
        work[:, column] = target
    return LayerTailoring(weight=work.to(finetuned.dtype), keep=keep)


def fuse_task_patches(
    pretrained: torch.Tensor,
    finetuned: Sequence[torch.Tensor],
    tailored: Sequence[LayerTailoring],
) -> torch.Tensor:
    """Multi-task fusion (paper App. B.2): M = ∪ M_t, C = Σ C_t / m, W = M ⊙ (W_ft + C) + (1 − M) ⊙ W_pre.

    The paper writes one W_ft; with m fine-tuned models we use their mean, so that one task gives
    back exactly its single-task result. C_t = (tailored_t − W_ft_t) on M_t and 0 elsewhere.
    """
    if len(finetuned) != len(tailored) or not finetuned:
        raise ValueError("need one tailoring result per fine-tuned weight")
    if len(finetuned) == 1:
        return tailored[0].weight.clone()
    dtype = compute_dtype(pretrained, *finetuned)
    keep_any = torch.zeros(pretrained.shape, dtype=torch.bool)
    compensation = torch.zeros(pretrained.shape, dtype=dtype)
    finetuned_mean = torch.zeros(pretrained.shape, dtype=dtype)
    for weight, result in zip(finetuned, tailored, strict=True):
        keep_any |= result.keep
        compensation += torch.where(result.keep, result.weight.to(dtype) - weight.to(dtype), 0.0)
        finetuned_mean += weight.to(dtype)
    count = len(finetuned)
    fused = torch.where(keep_any, finetuned_mean / count + compensation / count, pretrained.to(dtype))
    return fused.to(pretrained.dtype)
