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
    """TIES: trim to top-density magnitude, elect the sign of the summed mass, disjoint mean."""
    import torch

    trimmed = torch.stack([torch.where(top_share_mask(d.abs(), density), d, 0.0) for d in deltas])
    elected = torch.sign(trimmed.sum(dim=0))
    agrees = (torch.sign(trimmed) == elected) & (trimmed != 0)
    count = agrees.sum(dim=0)
    total = torch.where(agrees, trimmed, 0.0).sum(dim=0)
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
