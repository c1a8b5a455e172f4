"""``task-arithmetic`` (Ilharco et al. 2023): Θ = Θ_pre + λ Σ_t δ_t."""

from __future__ import annotations

from emtbench.methods.fusion.base import TaskVectorMerge, WeightParameters, progress, register_merge_method


@register_merge_method()
class TaskArithmetic(TaskVectorMerge):
    name = "task-arithmetic"
    summary = "Θ_pre + λ·Σ δ_t"
    parameters_class = WeightParameters

    def merge(self, pretrained, deltas, parameters, context):
        import torch

        return {
            name: pretrained[name] + parameters.weight * torch.stack([d[name] for d in deltas]).sum(dim=0)
            for name in progress(list(deltas[0]), self.name, context)
        }
