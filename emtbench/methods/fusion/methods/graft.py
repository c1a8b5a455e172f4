"""``graft`` (Panigrahi et al. 2023): learn a mask over δ by minimising the target loss of
Θ_pre + σ(S) ⊙ δ on calibration data, then keep the top-density share of S as a binary mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emtbench.core.errors import EmtbenchError
from emtbench.core.options import option
from emtbench.methods.fusion.base import (
    DensityParameters,
    TaskVectorMerge,
    register_merge_method,
    top_share_mask,
)

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class GraftParameters(DensityParameters):
    steps: int = option(100, help="graft: optimisation steps")
    lr: float = option(0.1, help="graft: Adam learning rate of the mask logits")
    sigmoid_bias: float = 3.0
    """Initial logit magnitude (σ(±3) ≈ 0.95/0.05); the top-density entries start at +bias."""

    def check(self) -> None:
        super().check()
        if self.steps < 1 or self.lr <= 0:
            raise EmtbenchError("--steps and --lr must be positive")


@register_merge_method()
class Graft(TaskVectorMerge):
    name = "graft"
    summary = "learn a sparse mask over δ on the target loss (sigmoid relaxation)"
    parameters_class = GraftParameters
    needs_calibration = True
    tensorwise = False  # the top-density share is taken over every parameter at once

    def run_settings(self, parameters):
        return {**super().run_settings(parameters), "steps": parameters.steps, "lr": parameters.lr}

    def merge(self, pretrained, deltas, parameters, context):
        """Optimise logits S of Θ_pre + σ(S) ⊙ δ on the target loss, then keep the top-density S."""
        import torch

        from emtbench.core.progress import progress_bar

        model = context.model
        if model is None or not context.calibration:
            raise EmtbenchError("graft needs a model and calibration data", fix="pass --calib-data")
        density = parameters.density_or(0.1)
        delta = {name: torch.stack([d[name] for d in deltas]).sum(dim=0).float() for name in deltas[0]}
        names = list(delta)
        # Start from the largest-|δ| entries (Panigrahi et al.'s initialisation), as logits ±bias.
        magnitudes = torch.cat([delta[name].abs().flatten() for name in names])
        initial = _split_like(top_share_mask(magnitudes, density), delta)
        logits = {
            name: torch.where(
                initial[name], parameters.sigmoid_bias, -parameters.sigmoid_bias
            ).requires_grad_()
            for name in names
        }
        base = {name: pretrained[name].float() for name in names}
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        optimizer = torch.optim.Adam(logits.values(), lr=parameters.lr)
        batches = [batch for task in context.calibration for batch in task]
        torch.manual_seed(context.seed)
        bar = progress_bar(range(parameters.steps), desc="graft", unit="step", enabled=context.progress)
        for step in bar:
            batch = batches[step % len(batches)]
            weights = {
                name: (base[name] + torch.sigmoid(logits[name]) * delta[name]).to(
                    model.get_parameter(name).dtype
                )
                for name in names
            }
            output = torch.func.functional_call(model, weights, args=(), kwargs=dict(batch))
            optimizer.zero_grad()
            output.loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{output.loss.item():.4f}")
        scores = torch.cat([logits[name].detach().flatten() for name in names])
        keep = _split_like(top_share_mask(scores, density), delta)
        return {
            name: (base[name] + torch.where(keep[name], delta[name], 0.0)).to(pretrained[name].dtype)
            for name in names
        }


def _split_like(flat: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch

    pieces = torch.split(flat, [t.numel() for t in like.values()])
    return {name: piece.view_as(t) for (name, t), piece in zip(like.items(), pieces, strict=True)}
