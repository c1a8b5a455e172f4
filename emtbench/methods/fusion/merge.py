"""Baseline merges of task vectors δ = Θ_ft − Θ_pre, behind a name registry (like mergekit's).

A merge method turns the pre-trained weights and one or more task vectors into merged weights for
the selected parameters. Add one with :func:`register_merge_method`; ``emtbench merge --method``
lists whatever is registered.

* ``task-arithmetic`` (Ilharco et al. 2023): Θ = Θ_pre + λ Σ_t δ_t.
* ``dare`` (Yu et al. 2024): drop each entry of δ_t with probability p, rescale survivors by
  1/(1 − p) so E[δ] is unchanged, then add like task arithmetic.
* ``ties`` (Yadav et al. 2023): trim each δ_t to its top-density share by magnitude, elect a sign
  per entry from the summed trimmed vectors, average only the entries that agree with it.
* ``graft`` (Panigrahi et al. 2023, SPEC §4): learn a mask over δ by minimising the target loss of
  Θ_pre + σ(S) ⊙ δ on calibration data, then keep the top-density share of S as a binary mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from emtbench.core.errors import EmtbenchError
from emtbench.core.registry import Registry

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MergeSettings:
    density: float | None = None
    """Share of each task vector kept (TIES, graft; DARE uses 1 − drop_rate)."""
    drop_rate: float | None = None
    weight: float = 1.0
    """λ, the scale of the merged task vector."""
    seed: int = 0
    steps: int = 100
    """Graft: optimisation steps on calibration batches."""
    lr: float = 0.1
    """Graft: Adam learning rate of the mask logits."""
    sigmoid_bias: float = 3.0
    """Graft: initial logit magnitude (σ(±3) ≈ 0.95/0.05), top-density entries start at +bias."""

    def density_or(self, default: float) -> float:
        if self.density is not None:
            return self.density
        if self.drop_rate is not None:
            return 1.0 - self.drop_rate
        return default

    def check(self) -> None:
        if (
            self.density is not None
            and self.drop_rate is not None
            and not math.isclose(self.density, 1.0 - self.drop_rate)
        ):
            raise EmtbenchError(
                "--density and --drop-rate disagree", fix="give one of them (density = 1 − drop rate)"
            )
        if self.density is not None and not 0.0 < self.density <= 1.0:
            raise EmtbenchError(f"density must be in (0, 1], got {self.density}", where="--density")
        if self.drop_rate is not None and not 0.0 <= self.drop_rate < 1.0:
            raise EmtbenchError(
                f"drop rate must be in [0, 1), got {self.drop_rate}",
                where="--drop-rate",
                fix="DARE rescales by 1/(1 − p); e.g. --drop-rate 0.9",
            )
        if self.steps < 1 or self.lr <= 0:
            raise EmtbenchError("--steps and --lr must be positive")


@dataclass
class MergeContext:
    """What a method may use beyond the weights: the model (graft) and calibration batches."""

    model: Any = None
    calibration: list[list[dict[str, Any]]] = field(default_factory=list)
    progress: bool = True
    generator: torch.Generator | None = None
    """Random stream shared by the calls of one merge (DARE), so a tensor-by-tensor merge draws the
    same numbers as one call over every tensor."""


MergeFunction = Callable[[StateDict, Sequence[StateDict], MergeSettings, MergeContext], StateDict]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    function: MergeFunction
    needs_calibration: bool
    summary: str
    tensorwise: bool = True
    """Each parameter's result depends on that parameter only, so it can be merged one at a time."""


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method", where="--method")


def register_merge_method(
    name: str, *, summary: str, needs_calibration: bool = False, tensorwise: bool = True
):
    """Add a merge method under ``name``: ``fn(pretrained, deltas, settings, context) -> merged``.

    ``tensorwise=False`` for a method that needs every parameter at once (graft's global top-k).
    """

    def decorate(function: MergeFunction) -> MergeFunction:
        MERGE_METHODS.add(
            name, MergeMethod(name, function, needs_calibration, summary, tensorwise), summary=summary
        )
        return function

    return decorate


def get_merge_method(name: str) -> MergeMethod:
    return MERGE_METHODS.get(name)


# ----------------------------------------------------------------------------- tensor-level operations


def dare_delta(delta: torch.Tensor, drop_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Drop each entry with probability p and rescale survivors by 1/(1 − p): E[result] = δ."""
    if drop_rate == 0.0:
        return delta.clone()
    keep = torch.rand(delta.shape, generator=generator) >= drop_rate
    return torch.where(keep, delta / (1.0 - drop_rate), torch.zeros((), dtype=delta.dtype))


def top_share_mask(values: torch.Tensor, density: float) -> torch.Tensor:
    """Exactly round(density·n) largest entries (ties by position: the lowest positions win).

    Selection by the k-th largest value (``kthvalue``, linear time) instead of a full sort: the
    same entries as a stable descending argsort, which took 20 of the 35 s of a TIES merge of
    SmolLM2-135M (``scripts/bench_mergekit.py``).
    """
    flat = values.flatten()
    count = min(flat.numel(), max(0, math.floor(density * flat.numel() + 0.5)))
    if count == 0:
        return torch.zeros(values.shape, dtype=torch.bool)
    if count == flat.numel():
        return torch.ones(values.shape, dtype=torch.bool)
    threshold = torch.kthvalue(flat, flat.numel() - count + 1).values
    mask = flat > threshold
    missing = count - int(mask.sum())
    if missing > 0:  # entries equal to the threshold, first positions first
        mask[torch.nonzero(flat == threshold).flatten()[:missing]] = True
    return mask.view_as(values)


def ties_delta(deltas: Sequence[torch.Tensor], density: float) -> torch.Tensor:
    """TIES: trim to top-density magnitude, elect the sign of the summed mass, disjoint mean."""
    trimmed = torch.stack([torch.where(top_share_mask(d.abs(), density), d, 0.0) for d in deltas])
    elected = torch.sign(trimmed.sum(dim=0))
    agrees = (torch.sign(trimmed) == elected) & (trimmed != 0)
    count = agrees.sum(dim=0)
    total = torch.where(agrees, trimmed, 0.0).sum(dim=0)
    return torch.where(count > 0, total / count.clamp_min(1), 0.0)


# ----------------------------------------------------------------------------- registered methods


@register_merge_method("task-arithmetic", summary="Θ_pre + λ·Σ δ_t")
def merge_task_arithmetic(pretrained, deltas, settings, context):
    return {
        name: pretrained[name] + settings.weight * torch.stack([d[name] for d in deltas]).sum(dim=0)
        for name in deltas[0]
    }


@register_merge_method("dare", summary="drop δ entries with prob. p, rescale by 1/(1−p), add")
def merge_dare(pretrained, deltas, settings, context):
    drop_rate = 1.0 - settings.density_or(0.1)
    generator = context.generator or torch.Generator().manual_seed(settings.seed)
    merged = {}
    for name in deltas[0]:
        total = sum(dare_delta(d[name], drop_rate, generator) for d in deltas)
        merged[name] = pretrained[name] + settings.weight * total
    return merged


@register_merge_method("ties", summary="trim to top density, elect signs, disjoint mean")
def merge_ties(pretrained, deltas, settings, context):
    density = settings.density_or(0.2)
    return {
        name: pretrained[name] + settings.weight * ties_delta([d[name] for d in deltas], density)
        for name in deltas[0]
    }


@register_merge_method(
    "graft",
    summary="learn a sparse mask over δ on the target loss (sigmoid relaxation)",
    needs_calibration=True,
    tensorwise=False,
)
def merge_graft(pretrained, deltas, settings, context):
    """Optimise logits S of Θ_pre + σ(S) ⊙ δ on the target loss, then keep the top-density S."""
    model = context.model
    if model is None or not context.calibration:
        raise EmtbenchError("graft needs a model and calibration data", fix="pass --calib-data")
    density = settings.density_or(0.1)
    delta = {name: torch.stack([d[name] for d in deltas]).sum(dim=0).float() for name in deltas[0]}
    names = list(delta)
    # Start from the largest-|δ| entries (Panigrahi et al.'s initialisation), as logits ±bias.
    magnitudes = torch.cat([delta[name].abs().flatten() for name in names])
    initial = _split_like(top_share_mask(magnitudes, density), delta)
    logits = {
        name: torch.where(initial[name], settings.sigmoid_bias, -settings.sigmoid_bias).requires_grad_()
        for name in names
    }
    base = {name: pretrained[name].float() for name in names}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.Adam(logits.values(), lr=settings.lr)
    batches = [batch for task in context.calibration for batch in task]
    torch.manual_seed(settings.seed)
    bar = tqdm(range(settings.steps), desc="graft", unit="step", disable=not context.progress)
    for step in bar:
        batch = batches[step % len(batches)]
        weights = {
            name: (base[name] + torch.sigmoid(logits[name]) * delta[name]).to(model.get_parameter(name).dtype)
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
    pieces = torch.split(flat, [t.numel() for t in like.values()])
    return {name: piece.view_as(t) for (name, t), piece in zip(like.items(), pieces, strict=True)}


def iter_merged(
    method: MergeMethod,
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    names: Sequence[str],
    settings: MergeSettings,
    context: MergeContext | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, merged value) for the named parameters, one parameter at a time for tensorwise methods.

    ``pretrained`` and ``finetuned`` may be lazy (:class:`~.checkpoints.LazyCheckpoint`): a tensorwise
    method then holds one parameter's values at a time, whatever the model's size.
    """
    settings.check()
    context = context or MergeContext()
    if not method.tensorwise:
        yield from merge_state_at_once(method, pretrained, finetuned, names, settings, context).items()
        return
    if context.generator is None:
        context = MergeContext(
            context.model, context.calibration, context.progress, torch.Generator().manual_seed(settings.seed)
        )
    for name in tqdm(names, desc=method.name, unit="tensor", disable=not context.progress):
        yield name, merge_state_at_once(method, pretrained, finetuned, [name], settings, context)[name]


def merge_state_at_once(method, pretrained, finetuned, names, settings, context) -> StateDict:
    base = {name: pretrained[name] for name in names}
    deltas = [{name: state[name].float() - base[name].float() for name in names} for state in finetuned]
    merged = method.function({name: t.float() for name, t in base.items()}, deltas, settings, context)
    return {name: merged[name].to(base[name].dtype) for name in names}


def merge_state(
    method: MergeMethod,
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    names: Sequence[str],
    settings: MergeSettings,
    context: MergeContext | None = None,
) -> StateDict:
    """Merged values of the named parameters (the others are not touched)."""
    return dict(iter_merged(method, pretrained, finetuned, names, settings, context))
