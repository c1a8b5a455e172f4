"""Run Model Tailor through a real model, layer by layer in forward order.

The model being tailored starts with the pre-trained weights. Each fusion *block* (the projector,
then every decoder layer of the language model) is processed in forward order: its inputs are
captured by running the real model (so the attention mask and position ids are the model's own),
each linear layer's calibration Hessian is collected with a forward hook while the real block runs,
the fused weight is written back, and the block is run once more to produce the next block's
inputs. Later layers therefore always see the already-tailored earlier ones, as in Model Tailor §4.2.

Linear layers that share one input (q/k/v, gate/up) are calibrated in one pass; a layer that reads
another's output (o_proj after v_proj) gets its own pass after that one has been tailored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from emtbench.core.errors import EmtbenchError
from emtbench.core.progress import progress_bar
from emtbench.methods.fusion.tailor import (
    HessianAccumulator,
    TailorConfig,
    fuse_task_patches,
    inverse_hessian_factor,
    tailor_layer,
)

Batch = dict[str, Any]
StateDict = dict[str, torch.Tensor]


class _StopForward(Exception):
    """Raised from a hook once the inputs we need are captured; the rest of the forward is skipped."""


@dataclass
class FusionLayout:
    """Where the fusable parts of a model are, by module name (from ``model.named_modules()``)."""

    projectors: list[str]
    decoder_layers: list[str]
    frozen_parts: dict[str, str] = field(default_factory=dict)
    """Parts left pre-trained unless asked (``embeddings``, ``lm_head``, ``vision_tower``) -> prefix."""


def fusion_layout(model: nn.Module) -> FusionLayout:
    """Projector(s) and decoder layers of a VLM from :mod:`emtbench.models.parts`, or of a plain causal LM."""
    from emtbench.models.parts import ARCHITECTURE_PARTS, part_paths

    name = type(model).__name__
    if name in ARCHITECTURE_PARTS:
        paths = part_paths(model)
        language_model = model.get_submodule(paths.language_model)
        layers_prefix = f"{paths.language_model}.layers"
        frozen = {"vision_tower": paths.vision_tower, "lm_head": paths.lm_head}
        if paths.embeddings:
            frozen["embeddings"] = paths.embeddings
        projectors = list(paths.projector)
    else:
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        if decoder is None or not hasattr(decoder, "layers"):
            raise EmtbenchError(
                f"cannot find the decoder layers of {name}",
                fix="add the architecture to emtbench.models.parts.ARCHITECTURE_PARTS",
            )
        language_model = decoder
        layers_prefix = next(n for n, m in model.named_modules() if m is decoder.layers)
        frozen = {"lm_head": "lm_head"}
        embeddings = model.get_input_embeddings()
        frozen["embeddings"] = next(n for n, m in model.named_modules() if m is embeddings)
        projectors = []
    layers = [f"{layers_prefix}.{index}" for index in range(len(language_model.layers))]
    return FusionLayout(projectors=projectors, decoder_layers=layers, frozen_parts=frozen)


def linear_layers(module: nn.Module, prefix: str) -> list[tuple[str, nn.Linear]]:
    return [
        (f"{prefix}.{name}" if name else prefix, child)
        for name, child in module.named_modules()
        if isinstance(child, nn.Linear)
    ]


def _augmented(linear_name: str, linear: nn.Linear, state: StateDict | None = None) -> torch.Tensor:
    """The weight with the bias as an extra input column (bias = weight on a constant-1 input)."""
    weight = linear.weight.detach() if state is None else state[f"{linear_name}.weight"]
    if linear.bias is None:
        return weight.float()
    bias = linear.bias.detach() if state is None else state[f"{linear_name}.bias"]
    return torch.cat([weight.float(), bias.float().unsqueeze(1)], dim=1)


def _write_augmented(linear: nn.Linear, fused: torch.Tensor) -> None:
    with torch.no_grad():
        if linear.bias is None:
            linear.weight.copy_(fused)
        else:
            linear.weight.copy_(fused[:, :-1])
            linear.bias.copy_(fused[:, -1])


@dataclass
class CapturedInputs:
    """One calibration batch as a block receives it, plus which token positions are real (not padding)."""

    args: tuple
    kwargs: dict[str, Any]
    token_mask: torch.Tensor | None


def capture_block_inputs(
    model: nn.Module, block: nn.Module, batches: Sequence[Batch]
) -> list[CapturedInputs]:
    """Run the real model on each batch until ``block`` is called, and keep what it was called with."""
    captured: list[CapturedInputs] = []
    current_mask: list[torch.Tensor | None] = [None]

    def grab(_module, args, kwargs):
        captured.append(CapturedInputs(tuple(args), dict(kwargs), current_mask[0]))
        raise _StopForward

    handle = block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for batch in batches:
            mask = batch.get("attention_mask")
            current_mask[0] = mask.bool() if mask is not None else None
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            try:
                model(**inputs, use_cache=False)
            except _StopForward:
                continue
            raise EmtbenchError(f"the calibration forward never reached {type(block).__name__}")
    finally:
        handle.remove()
    return captured


def _run_block(block: nn.Module, item: CapturedInputs):
    output = block(*item.args, **item.kwargs)
    return output[0] if isinstance(output, tuple) else output


def _with_hidden_states(item: CapturedInputs, hidden: torch.Tensor) -> CapturedInputs:
    if item.args:
        return CapturedInputs((hidden, *item.args[1:]), item.kwargs, item.token_mask)
    return CapturedInputs((), {**item.kwargs, "hidden_states": hidden}, item.token_mask)


def _rows_for_hessian(inputs: torch.Tensor, token_mask: torch.Tensor | None, with_bias: bool) -> torch.Tensor:
    if token_mask is not None and inputs.dim() == 3 and inputs.shape[:2] == token_mask.shape:
        rows = inputs[token_mask]
    else:
        rows = inputs.reshape(-1, inputs.shape[-1])
    rows = rows.float()
    if with_bias:
        rows = torch.cat([rows, torch.ones(rows.shape[0], 1)], dim=1)
    return rows


def _input_groups(block: nn.Module, targets: list[tuple[str, nn.Linear]], sample: CapturedInputs):
    """Target linears in call order, grouped when they read the very same input tensor."""
    calls: list[tuple[str, nn.Linear, torch.Tensor]] = []
    seen: set[str] = set()
    handles = []
    for name, linear in targets:

        def record(_module, args, name=name, linear=linear):
            if name not in seen:
                seen.add(name)
                calls.append((name, linear, args[0]))

        handles.append(linear.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            _run_block(block, sample)
    finally:
        for handle in handles:
            handle.remove()
    groups: list[list[tuple[str, nn.Linear]]] = []
    previous: torch.Tensor | None = None
    for name, linear, tensor in calls:
        if groups and tensor is previous:
            groups[-1].append((name, linear))
        else:
            groups.append([(name, linear)])
        previous = tensor
    missing = [name for name, _ in targets if name not in seen]
    if missing:
        raise EmtbenchError(f"linear layers never called during calibration: {', '.join(missing)}")
    return groups


def _group_hessian(
    block: nn.Module, group: list[tuple[str, nn.Linear]], inputs: list[CapturedInputs]
) -> torch.Tensor:
    """One Hessian for a group (its members read the same input), with a bias column if any has a bias."""
    with_bias = any(linear.bias is not None for _, linear in group)
    first = group[0][1]
    accumulator = HessianAccumulator(first.in_features + with_bias)
    current: list[CapturedInputs | None] = [None]

    def collect(_module, args):
        item = current[0]
        accumulator.add(_rows_for_hessian(args[0], item.token_mask if item else None, with_bias))
        raise _StopForward  # the other members read the same tensor: nothing more to see

    handle = first.register_forward_pre_hook(collect)
    try:
        with torch.no_grad():
            for item in inputs:
                current[0] = item
                try:
                    _run_block(block, item)
                except _StopForward:
                    continue
    finally:
        handle.remove()
    return accumulator.hessian()


@dataclass
class LayerReport:
    name: str
    status: str
    """``tailored``, ``identical`` (skipped) or ``not selected`` (left pre-trained by --layers)."""
    changed_share: float
    numel: int


def tailor_block(
    block: nn.Module,
    targets: list[tuple[str, nn.Linear]],
    finetuned: Sequence[StateDict],
    inputs_per_task: Sequence[list[CapturedInputs]],
    config: TailorConfig,
) -> list[LayerReport]:
    """Tailor the target linears of one block in dependency order and write the fused weights back."""
    reports = []
    for group in _input_groups(block, targets, inputs_per_task[0][0]):
        hessians = [_group_hessian(block, group, inputs) for inputs in inputs_per_task]
        factors: dict[tuple[int, bool], torch.Tensor] = {}  # shared by the group's members
        for name, linear in group:
            with_bias = linear.bias is not None
            pretrained = _augmented(name, linear)
            task_weights = [_augmented(name, linear, state) for state in finetuned]
            results = []
            for task, (weight, hessian) in enumerate(zip(task_weights, hessians, strict=True)):
                if (task, with_bias) not in factors:
                    size = pretrained.shape[1]
                    factors[task, with_bias] = inverse_hessian_factor(hessian[:size, :size], config.damp)
                results.append(
                    tailor_layer(pretrained, weight, None, config, factor=factors[task, with_bias])
                )
            fused = fuse_task_patches(pretrained, task_weights, results)
            changed = (fused != pretrained).sum().item()
            _write_augmented(linear, fused)
            reports.append(LayerReport(name, "tailored", changed / fused.numel(), fused.numel()))
    return reports


def _differs(name: str, linear: nn.Linear, finetuned: Sequence[StateDict]) -> bool:
    own = dict(linear.named_parameters())
    return any(
        not torch.equal(parameter.detach(), state[f"{name}.{key}"].to(parameter.dtype))
        for state in finetuned
        for key, parameter in own.items()
    )


def tailor_model(
    model: nn.Module,
    finetuned: Sequence[StateDict],
    calibration: Sequence[Sequence[Batch]],
    config: TailorConfig,
    *,
    layers: str | None = None,
    progress: bool = True,
    on_block: Callable[[str], None] | None = None,
) -> list[LayerReport]:
    """Tailor ``model`` (holding pre-trained weights) in place; one calibration set per fine-tuned model.

    ``layers`` is a regular expression searched in each linear layer's module name; linears that do
    not match, or whose weights equal the pre-trained ones in every fine-tuned model, are left alone.
    """
    if len(finetuned) != len(calibration) or not finetuned:
        raise EmtbenchError(
            f"{len(finetuned)} fine-tuned model(s) but {len(calibration)} calibration set(s)",
            fix="give one --calib-data per --finetuned (or a single one used for all)",
        )
    pattern = re.compile(layers) if layers else None
    layout = fusion_layout(model)
    model.eval()
    reports: list[LayerReport] = []
    blocks = [(name, True) for name in layout.projectors] + [(name, False) for name in layout.decoder_layers]
    plan = []
    for block_name, is_projector in blocks:
        block = model.get_submodule(block_name)
        targets = []
        for name, linear in linear_layers(block, block_name):
            if pattern is not None and not pattern.search(name):
                status = "not selected"
            elif _differs(name, linear, finetuned):
                targets.append((name, linear))
                continue
            else:
                status = "identical"
            reports.append(LayerReport(name, status, 0.0, linear.weight.numel()))
        plan.append((block_name, block, is_projector, targets))

    last_with_targets = max((index for index, entry in enumerate(plan) if entry[3]), default=-1)
    decoder_inputs: list[list[CapturedInputs]] | None = None
    bar = progress_bar(plan[: last_with_targets + 1], desc="tailor", unit="block", enabled=progress)
    for index, (block_name, block, is_projector, targets) in enumerate(bar):
        bar.set_postfix_str(block_name)
        if is_projector:
            if targets:
                with torch.no_grad():
                    inputs = [capture_block_inputs(model, block, batches) for batches in calibration]
                reports += tailor_block(block, targets, finetuned, inputs, config)
            continue
        if decoder_inputs is None:  # first decoder layer: through the (tailored) projector and embeddings
            with torch.no_grad():
                decoder_inputs = [capture_block_inputs(model, block, batches) for batches in calibration]
        if targets:
            reports += tailor_block(block, targets, finetuned, decoder_inputs, config)
        if on_block is not None:
            on_block(block_name)
        if index < last_with_targets:  # the next block's inputs, through this tailored one
            with torch.no_grad():
                decoder_inputs = [
                    [_with_hidden_states(item, _run_block(block, item)) for item in inputs]
                    for inputs in decoder_inputs
                ]
    bar.close()
    order = {name: index for index, (name, _) in enumerate(model.named_modules())}
    return sorted(reports, key=lambda report: order.get(report.name, 0))
