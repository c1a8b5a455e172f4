"""``ties`` (Yadav et al. 2023): trim each δ_t to its top-density share by magnitude, elect a sign per
entry from the summed trimmed vectors, average only the entries that agree with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from emtbench.methods.fusion.base import (
    DensityParameters,
    TaskVectorMerge,
    progress,
    register_merge_method,
    top_share_mask,
)

if TYPE_CHECKING:
    import torch


def ties_delta(deltas: Sequence[torch.Tensor], density: float) -> torch.Tensor:
    """TIES: trim to top-density magnitude, elect the sign of the summed mass, disjoint mean.

    Computed in one buffer of the trimmed vectors, updated in place: an entry agrees with the elected
    sign e ∈ {−1, 0, 1} exactly when trimmed·e > 0 (nonzero and the same sign), so one product and
    one comparison replace two sign maps, two comparisons and a conjunction. Zeros that the trim or
    the disagreement leave may be −0.0 here, which changes no sum (x + (−0.0) = x) and no sign test.
    """
    import torch

    trimmed = torch.empty((len(deltas), *deltas[0].shape), dtype=deltas[0].dtype)
    for row, delta in zip(trimmed, deltas, strict=True):
        torch.mul(delta, top_share_mask(delta.abs(), density), out=row)
    elected = trimmed.sum(dim=0).sign_()
    agrees = torch.mul(trimmed, elected).gt_(0)  # 1.0 where trimmed agrees with the elected sign
    count = agrees.sum(dim=0)
    total = trimmed.mul_(agrees).sum(dim=0)
    return torch.where(count > 0, total / count.clamp_min(1), 0.0)


@register_merge_method()
class Ties(TaskVectorMerge):
    name = "ties"
    summary = "trim to top density, elect signs, disjoint mean"
    parameters_class = DensityParameters

    def merge(self, pretrained, deltas, parameters, context):
        density = parameters.density_or(0.2)
        return {
            name: pretrained[name] + parameters.weight * ties_delta([d[name] for d in deltas], density)
            for name in progress(list(deltas[0]), self.name, context)
        }
