"""``dare`` (Yu et al. 2024): drop each entry of δ_t with probability p, rescale the survivors by
1/(1 − p) so E[δ] is unchanged, then add like task arithmetic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emtbench.methods.fusion.base import DensityParameters, TaskVectorMerge, progress, register_merge_method

if TYPE_CHECKING:
    import torch


def dare_delta(delta: torch.Tensor, drop_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Drop each entry with probability p and rescale survivors by 1/(1 − p): E[result] = δ."""
    import torch

    if drop_rate == 0.0:
        return delta.clone()
    dropped = torch.rand(delta.shape, generator=generator) < drop_rate
    return (delta / (1.0 - drop_rate)).masked_fill_(dropped, 0.0)  # in place: no third tensor


@register_merge_method()
class Dare(TaskVectorMerge):
    name = "dare"
    summary = "drop δ entries with prob. p, rescale by 1/(1−p), add"
    parameters_class = DensityParameters

    def merge(self, pretrained, deltas, parameters, context):
        import torch

        drop_rate = 1.0 - parameters.density_or(0.1)
        generator = context.generator or torch.Generator().manual_seed(context.seed)
        merged = {}
        for name in progress(list(deltas[0]), self.name, context):
            total = sum(dare_delta(d[name], drop_rate, generator) for d in deltas)
            merged[name] = pretrained[name] + parameters.weight * total
        return merged
