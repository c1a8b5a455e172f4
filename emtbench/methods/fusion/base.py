"""The merge-method interface (mergekit's shape: one module per method, parameters declared by it).

A :class:`MergeMethod` fuses the fine-tuned models into the model being built (it holds the
pre-trained weights); :class:`TaskVectorMerge` is the common case of a function of the task vectors
δ_t = Θ_ft,t − Θ_pre of the selected parameters. Each method declares a parameters dataclass whose
fields (:func:`emtbench.core.options.option`) become its ``emtbench merge`` flags. A new method is one
module in :mod:`emtbench.methods.fusion.methods`, registered with :func:`register_merge_method`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from emtbench.core.errors import EmtbenchError
from emtbench.core.options import option
from emtbench.core.registry import Registry

if TYPE_CHECKING:
    import torch

    StateDict = dict[str, torch.Tensor]
else:
    StateDict = dict


@dataclass(frozen=True)
class NoParameters:
    """A method without parameters of its own."""

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class WeightParameters:
    weight: float = option(1.0, help="λ, scale of the merged task vector")

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class DensityParameters(WeightParameters):
    """A share of each task vector to keep, given as ``density`` or (DARE's) ``drop_rate`` = 1 − density."""

    density: float | None = option(
        None, help="share of δ kept (default: ties 0.2, graft 0.1; for dare it means 1 − p)"
    )
    drop_rate: float | None = option(None, help="DARE drop probability p")

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


@dataclass
class MergeContext:
    """What a method may use beyond the weights: the model (graft), calibration batches, the seed."""

    model: Any = None
    calibration: list[list[dict[str, Any]]] = field(default_factory=list)
    progress: bool = True
    seed: int = 0
    generator: torch.Generator | None = None
    """Random stream shared by the calls of one merge (DARE), so a tensor-by-tensor merge draws the
    same numbers as one call over every tensor."""


@dataclass
class FusionJob:
    """A fusion in progress: the model (pre-trained weights, to be fused in place) and what it is fused from."""

    model: Any
    pretrained_state: StateDict
    finetuned: list[StateDict]
    calibration: list[list[dict[str, Any]]]
    layers: str | None
    """Regular expression of the parameter/module names to fuse (``None``: all)."""
    copy_finetuned: Sequence[str]
    """Frozen parts taken from the fine-tuned models instead (``embeddings``, ``lm_head``, ``vision_tower``)."""
    progress: bool = True
    seed: int = 0
    changed: dict[str, int] = field(default_factory=dict)
    """Filled by the fusion where it knows them: parameter name -> entries that now differ from
    pre-trained (so the run record need not read those pre-trained values again)."""


class MergeMethod:
    """One fusion method. Subclasses set the class attributes and implement :meth:`fuse`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    parameters_class: ClassVar[type] = NoParameters
    needs_calibration: ClassVar[bool] = False

    def check(self, parameters: Any) -> None:
        parameters.check()

    def record_name(self, finetuned_count: int) -> str:
        """``method`` in ``emtbench_run.json``."""
        return self.name

    def run_settings(self, parameters: Any) -> dict[str, Any]:
        """The method's part of ``settings`` in ``emtbench_run.json``."""
        return {
            "density": getattr(parameters, "density", None),
            "drop_rate": getattr(parameters, "drop_rate", None),
            "weight": getattr(parameters, "weight", 1.0),
        }

    def fuse(self, job: FusionJob, parameters: Any) -> dict[str, dict[str, Any]]:
        """Fuse in place into ``job.model``; return a report per fused (or skipped) layer."""
        raise NotImplementedError


class TaskVectorMerge(MergeMethod):
    """A method that maps the pre-trained values and task vectors of each selected parameter to merged values."""

    tensorwise: ClassVar[bool] = True
    """Each parameter's result depends on that parameter only, so parameters are merged (and written
    into the model) one at a time; False for a method that needs all of them at once (graft)."""

    def merge(
        self, pretrained: StateDict, deltas: Sequence[StateDict], parameters: Any, context: MergeContext
    ) -> StateDict:
        raise NotImplementedError

    def fuse(self, job: FusionJob, parameters: Any) -> dict[str, dict[str, Any]]:
        import re

        import torch

        from emtbench.methods.fusion.checkpoints import frozen_prefixes, tensors_equal

        model, pretrained_state, finetuned = job.model, job.pretrained_state, job.finetuned
        pattern = re.compile(job.layers) if job.layers else None
        frozen = tuple(frozen_prefixes(model, job.copy_finetuned).values())
        selected = [
            (name, parameter)
            for name, parameter in model.named_parameters()
            if parameter.is_floating_point()
            and not any(name == prefix or name.startswith(prefix + ".") for prefix in frozen)
            and (pattern is None or pattern.search(name))
        ]
        context = MergeContext(model=model, calibration=job.calibration, progress=job.progress, seed=job.seed)
        names: list[str] = []
        if self.tensorwise:
            # One pass: each parameter's values are read once, both to see whether a fine-tuned model
            # changed it and to merge it (a first pass over every parameter only to find the changed
            # ones read each checkpoint twice). Same parameters, same order, so DARE draws the same.
            self.check(parameters)
            context.generator = torch.Generator().manual_seed(context.seed)
            quiet = replace(context, progress=False)
            for name, parameter in progress(selected, self.name, context):
                base = pretrained_state[name]
                values = [state[name] for state in finetuned]
                if all(tensors_equal(value, base) for value in values):
                    continue
                value = merge_tensor(self, name, base, values, parameters, quiet)
                with torch.no_grad():
                    parameter.copy_(value)  # written as merged: no second copy of the weights
                job.changed[name] = int((value != base).sum())
                names.append(name)
                del base, values, value
        else:
            names = [
                name
                for name, _ in selected
                if any(not tensors_equal(state[name], pretrained_state[name]) for state in finetuned)
            ]
        if not names:
            raise EmtbenchError(
                "no selected parameter differs between the pre-trained and fine-tuned models",
                where="--finetuned" if pattern is None else "--layers",
                fix="check that --finetuned was fine-tuned from --pretrained (and that --layers matches its layers)",
            )
        if not self.tensorwise:
            for name, value in iter_merged(self, pretrained_state, finetuned, names, parameters, context):
                with torch.no_grad():  # only around the write: graft's optimisation runs inside the iterator
                    model.get_parameter(name).copy_(value)
        return {name: {"status": "merged"} for name in names}


MergeFunction = Callable[[StateDict, Sequence[StateDict], Any, MergeContext], StateDict]


class FunctionMerge(TaskVectorMerge):
    """A task-vector merge given as a plain function (what :func:`register_merge_method` wraps)."""

    def __init__(
        self, name: str, function: MergeFunction, summary: str, parameters_class: type, calibration: bool
    ):
        self.name = name
        self.function = function
        self.summary = summary
        self.parameters_class = parameters_class
        self.needs_calibration = calibration

    def merge(self, pretrained, deltas, parameters, context):
        return self.function(pretrained, deltas, parameters, context)


MERGE_METHODS: Registry[MergeMethod] = Registry(
    "merge method", builtins="emtbench.methods.fusion.methods", where="--method"
)
"""Every merge method by name; the modules of :mod:`emtbench.methods.fusion.methods` register on first lookup."""


def register_merge_method(
    name: str | None = None,
    *,
    summary: str = "",
    parameters: type = NoParameters,
    needs_calibration: bool = False,
):
    """Register a :class:`MergeMethod` subclass (``@register_merge_method()``), or a task-vector
    function ``fn(pretrained, deltas, parameters, context) -> merged`` under ``name``."""

    def decorate(target):
        if isinstance(target, type) and issubclass(target, MergeMethod):
            MERGE_METHODS.add(target.name, target(), summary=target.summary)
        else:
            method = FunctionMerge(name, target, summary, parameters, needs_calibration)
            MERGE_METHODS.add(name, method, summary=summary)
        return target

    return decorate


def get_merge_method(name: str) -> MergeMethod:
    return MERGE_METHODS.get(name)


def top_share_mask(values: torch.Tensor, density: float) -> torch.Tensor:
    """Exactly round(density·n) largest entries (ties by position: the lowest positions win).

    Selection by the k-th largest value (``kthvalue``, linear time) instead of a full sort: the
    same entries as a stable descending argsort, which took 20 of the 35 s of a TIES merge of
    SmolLM2-135M (``scripts/bench_mergekit.py``). Non-negative floats (TIES passes magnitudes) are
    selected on their bit patterns as integers, which order exactly as the floats do and select
    faster (~1.5x for kthvalue on CPU).
    """
    import torch

    flat = values.flatten()
    count = min(flat.numel(), max(0, math.floor(density * flat.numel() + 0.5)))
    if count == 0:
        return torch.zeros(values.shape, dtype=torch.bool)
    if count == flat.numel():
        return torch.ones(values.shape, dtype=torch.bool)
    keys = flat
    bits = _SAME_ORDER_INTEGERS.get(str(flat.dtype))
    if bits is not None:
        as_integers = flat.view(getattr(torch, bits))
        if bool(as_integers.min() >= 0):  # no sign bit set: no negative number, no -0.0
            keys = as_integers
    threshold = torch.kthvalue(keys, flat.numel() - count + 1).values
    mask = keys >= threshold
    extra = int(mask.sum()) - count
    if extra > 0:  # entries equal to the threshold beyond count: the last positions lose
        mask[torch.nonzero(keys == threshold).flatten()[-extra:]] = False
    return mask.view_as(values)


_SAME_ORDER_INTEGERS = {
    "torch.float32": "int32", "torch.float64": "int64", "torch.float16": "int16", "torch.bfloat16": "int16",
}  # fmt: skip


def iter_merged(
    method: TaskVectorMerge,
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    names: Sequence[str],
    parameters: Any,
    context: MergeContext | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, merged value) of the named parameters, one parameter at a time for tensorwise methods.

    ``pretrained`` and ``finetuned`` may be lazy (:class:`~.checkpoints.LazyCheckpoint`): a tensorwise
    method then holds one parameter's values at a time, whatever the model's size. One random stream
    (``context.generator``) serves every call, so DARE draws what one call over every tensor draws.
    """
    import torch

    method.check(parameters)
    context = context or MergeContext()
    if not method.tensorwise:
        yield from _merge_at_once(method, pretrained, finetuned, names, parameters, context).items()
        return
    quiet = replace(context, progress=False)
    if quiet.generator is None:
        quiet.generator = torch.Generator().manual_seed(context.seed)
    for name in progress(list(names), method.name, context):
        yield name, _merge_at_once(method, pretrained, finetuned, [name], parameters, quiet)[name]


def _merge_at_once(method, pretrained, finetuned, names, parameters, context) -> StateDict:
    base = {name: pretrained[name] for name in names}
    base_float = {name: tensor.float() for name, tensor in base.items()}  # cast once, not once per model
    deltas = [{name: state[name].float() - base_float[name] for name in names} for state in finetuned]
    merged = method.merge(base_float, deltas, parameters, context)
    return {name: merged[name].to(base[name].dtype) for name in names}


def merge_tensor(
    method: TaskVectorMerge,
    name: str,
    pretrained: torch.Tensor,
    finetuned: Sequence[torch.Tensor],
    parameters: Any,
    context: MergeContext,
) -> torch.Tensor:
    """The merged value of one parameter from its already-read pre-trained and fine-tuned values
    (what :func:`iter_merged` yields for it; ``context.generator`` carries DARE's stream across calls)."""
    return _merge_at_once(
        method, {name: pretrained}, [{name: value} for value in finetuned], [name], parameters, context
    )[name]


def merge_state(
    method: TaskVectorMerge,
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    names: Sequence[str],
    parameters: Any,
    context: MergeContext | None = None,
) -> StateDict:
    """Merged values of the named parameters (the others are not touched)."""
    return dict(iter_merged(method, pretrained, finetuned, names, parameters, context))


def progress(names: Sequence[str], method: str, context: MergeContext):
    """A progress bar over the parameters a method merges (off with ``--no-progress``)."""
    from emtbench.core.progress import progress_bar

    return progress_bar(names, desc=method, unit="tensor", enabled=context.progress)
