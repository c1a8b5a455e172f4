"""``emtbench.merge`` and ``emtbench.tailor``: check the inputs, load, fuse, write the model folder.

Every method runs the same steps: everything that can be wrong with the input (output folder,
architectures and shapes, calibration data) is checked before any weights are loaded; the method fuses
into the pre-trained model in place; the folder is written atomically with its run record and card.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.options import option, to_argv
from emtbench.core.records import WrittenModel
from emtbench.methods.fusion.base import FusionJob, MergeMethod, get_merge_method

FROZEN_CHOICES = ("embeddings", "lm_head", "vision_tower")


@dataclass
class MergeOptions:
    """One fusion: the method and its parameters, the checkpoints, the calibration data, the output."""

    pretrained: str = option(metavar="DIR", help="pre-trained model folder")
    finetuned: list[str] = option(
        metavar="DIR", help="fine-tuned model folder (same architecture); repeat for several tasks"
    )
    output: Path = option(metavar="DIR", help="where to write the fused model")
    method: str = "model-tailor"
    parameters: Any = None
    """The method's parameters dataclass (``DensityParameters``, ``TailorConfig`` ...); ``None``: its defaults."""
    calib_data: list[str] = option(
        default_factory=list,
        metavar="SPEC",
        help="target-task conversations: emt:<name> or a LLaVA JSON; one per --finetuned, or one for all",
    )
    calib_samples: int = option(128, help="calibration examples per task")
    calib_batch_size: int = option(8, help="examples per calibration forward")
    calib_split: str = option("train", help="dataset split for emt:<name> data")
    image_root: str | None = option(None, help="folder LLaVA JSON image paths are relative to")
    seed: int = option(0, help="seed of the calibration subset (and DARE's drops)")
    layers: str | None = option(
        None,
        metavar="REGEX",
        help="only fuse parameters whose module name matches (re.search), e.g. 'layers\\.(2[0-9]|3[01])\\.'",
    )
    copy_finetuned: list[str] = option(
        default_factory=list,
        choices=FROZEN_CHOICES,
        help="take this part from the fine-tuned model(s) (mean) instead of pre-trained; repeatable",
    )
    overwrite: bool = option(False, help="replace an existing different run in --output")
    push_to_hub: str | None = option(None, metavar="REPO_ID", help="upload the result to this Hub repo")
    private: bool = option(False, help="make the --push-to-hub repo private")
    progress: bool = option(True, negative="--no-progress", help="hide progress bars")

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if isinstance(self.finetuned, str):
            self.finetuned = [self.finetuned]
        method = get_merge_method(self.method)
        if self.parameters is None:
            self.parameters = method.parameters_class()
        method.check(self.parameters)
        if self.calib_samples < 1 or self.calib_batch_size < 1:
            raise EmtbenchError("--calib-samples and --calib-batch-size must be positive")
        if self.layers is not None:
            try:
                re.compile(self.layers)
            except re.error as error:
                raise EmtbenchError(f"not a regular expression ({error})", where="--layers") from None

    @property
    def method_object(self) -> MergeMethod:
        return get_merge_method(self.method)

    def to_argv(self, *, with_method: bool = True) -> list[str]:
        """``emtbench merge`` (``with_method``) or ``emtbench tailor`` arguments for the same fusion."""
        argv = ["--method", self.method] if with_method else []
        argv += ["--pretrained", self.pretrained]
        for path in self.finetuned:
            argv += ["--finetuned", path]
        argv += to_argv(self, exclude=("pretrained", "finetuned", "output"))
        argv += to_argv(self.parameters)
        return [*argv, "--output", str(self.output)]

    def calibration_specs(self) -> list[str]:
        """One calibration spec per fine-tuned model (a single one is used for all)."""
        specs = list(self.calib_data)
        if not specs:
            if self.method_object.needs_calibration:
                raise EmtbenchError(
                    "calibration data is required", where="--calib-data", fix="e.g. --calib-data emt:cifar10"
                )
            return []
        if len(specs) == 1:
            return specs * len(self.finetuned)
        if len(specs) != len(self.finetuned):
            raise EmtbenchError(
                f"{len(specs)} --calib-data for {len(self.finetuned)} --finetuned",
                where="--calib-data",
                fix="give one --calib-data per --finetuned (in the same order), or a single one for all",
            )
        return specs


class FusionResult(WrittenModel):
    """The fused model folder, its run record, and the Hub URL if it was pushed."""

    @property
    def changed_fraction(self) -> float:
        """Share of all parameter values that differ from pre-trained."""
        return self.record["parameters"]["changed_fraction"]


def merge_options(method: str, **values: Any) -> MergeOptions:
    """:class:`MergeOptions` from flat keywords: the method's parameter fields go to its parameters dataclass."""
    own = {f.name for f in dataclasses.fields(MergeOptions)}
    parameters = values.pop("parameters", None)
    rest = {k: values.pop(k) for k in list(values) if k not in own}
    if rest:
        if parameters is not None:
            raise TypeError(f"give parameters= or the parameter keywords {sorted(rest)}, not both")
        method_object = get_merge_method(method)
        names = {f.name for f in dataclasses.fields(method_object.parameters_class)}
        unknown = sorted(set(rest) - names)
        if unknown:
            raise EmtbenchError(
                f"{method!r} takes no {', '.join(unknown)}",
                fix=f"its parameters: {', '.join(sorted(names)) or 'none'}",
            )
        parameters = method_object.parameters_class(**rest)
    return MergeOptions(method=method, parameters=parameters, **values)


def _base_run(options: MergeOptions, specs: list[str]) -> dict[str, Any]:
    method = options.method_object
    return {
        "method": method.record_name(len(options.finetuned)),
        "base_model": options.pretrained,
        "finetuned": list(options.finetuned),
        "settings": {
            **method.run_settings(options.parameters),
            "layers": options.layers,
            "copy_finetuned": sorted(options.copy_finetuned),
            "calib_samples": options.calib_samples if specs else None,
            "calib_batch_size": options.calib_batch_size if specs else None,
            "calib_split": options.calib_split if specs else None,
            "seed": options.seed,
        },
        "data": {"calibration": specs} if specs else None,
    }


def merge(options: MergeOptions | None = None, /, **values: Any) -> FusionResult:
    """Fuse fine-tuned checkpoint(s) into the pre-trained one with a merge method.

    Example::

        import emtbench
        result = emtbench.merge(
            method="dare", pretrained="llava-1.5-7b-hf", finetuned=["runs/ft"], drop_rate=0.9,
            output="runs/dare",
        )
        print(result.output, result.changed_fraction)
    """
    import torch

    from emtbench.core.records import check_output_dir, write_model_dir
    from emtbench.hub.cards import model_card
    from emtbench.methods.fusion.checkpoints import (
        calibration_batches,
        changed_fraction,
        check_compatible,
        copy_finetuned_parts,
        load_model,
        load_processor,
        open_checkpoint,
    )

    if options is None:
        options = merge_options(**values)
    elif values:
        raise TypeError("give a MergeOptions or keyword arguments, not both")
    specs = options.calibration_specs()
    run = _base_run(options, specs)
    # Everything that can fail on bad input, before weights are loaded: output, shapes, calibration.
    check_output_dir(options.output, run, overwrite=options.overwrite)
    if options.push_to_hub:
        from emtbench.hub.calls import check_credentials

        check_credentials(options.push_to_hub)  # a missing or bad token fails now, not after merging
    check_compatible(options.pretrained, options.finetuned)
    processor = load_processor(options.pretrained)
    calibration = [
        calibration_batches(
            spec,
            processor,
            samples=options.calib_samples,
            batch_size=options.calib_batch_size,
            seed=options.seed,
            split=options.calib_split,
            image_root=options.image_root,
        )
        for spec in specs
    ]
    model = load_model(options.pretrained, "--pretrained")
    # Only the model being fused is held whole; the pre-trained and fine-tuned values are read from
    # their safetensors one parameter at a time (open_checkpoint falls back to loading them whole).
    pretrained_state = open_checkpoint(
        options.pretrained,
        model,
        eager=lambda: {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
        flag="--pretrained",
    )
    finetuned = [open_checkpoint(path, model) for path in options.finetuned]
    with torch.no_grad():
        copied = copy_finetuned_parts(model, finetuned, options.copy_finetuned)
    job = FusionJob(
        model=model,
        pretrained_state=pretrained_state,
        finetuned=finetuned,
        calibration=calibration,
        layers=options.layers,
        copy_finetuned=options.copy_finetuned,
        progress=options.progress,
        seed=options.seed,
    )
    layers = options.method_object.fuse(job, options.parameters)
    for name in copied:
        layers[name] = (
            {"status": "copied from fine-tuned", "changed_share": None}
            if options.method == "model-tailor"
            else {"status": "copied from fine-tuned"}
        )

    stats = changed_fraction(model, pretrained_state, known=job.changed)
    current = model.state_dict()
    run["parameters"] = {
        "changed_fraction": stats["changed_fraction"],
        "changed": stats["changed"],
        "total": stats["total"],
    }
    run["layers"] = layers
    run["changed_share_per_tensor"] = stats["per_tensor"]
    run["fine_tuned_but_left_pretrained"] = _left_pretrained(
        current, pretrained_state, finetuned, changed=set(stats["per_tensor"])
    )

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    output = write_model_dir(options.output, save, run, overwrite=options.overwrite, card=model_card)
    hub_url = None
    if options.push_to_hub:
        from emtbench.hub.push import push_to_hub

        hub_url = push_to_hub(output, options.push_to_hub, private=options.private)
    return FusionResult(output, run, hub_url)


def _left_pretrained(current, pretrained_state, finetuned, *, changed: set[str]) -> list[str]:
    """Names whose fused value is the pre-trained one although some fine-tuned model changed it.

    Each value is read once per checkpoint: parameters known to differ from pre-trained (``changed``)
    are skipped, the pre-trained value is read once for all the fine-tuned comparisons, and tied
    entries (one tensor under several names, e.g. embeddings and lm_head) are compared once.
    """
    from emtbench.methods.fusion.checkpoints import tensors_equal

    left, verdicts = [], {}
    for name, tensor in current.items():
        if name in changed:
            continue
        tied = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.dtype,
        )
        if tensor.numel() == 0 or tied not in verdicts:
            pretrained = pretrained_state[name]
            verdicts[tied] = tensors_equal(tensor, pretrained) and any(
                not tensors_equal(state[name], pretrained) for state in finetuned
            )
            del pretrained
        if verdicts[tied]:
            left.append(name)
    return sorted(left)


def tailor(options: MergeOptions | None = None, /, **values: Any) -> FusionResult:
    """Model Tailor (Zhu et al. 2024): :func:`merge` with ``method="model-tailor"``.

    Example::

        import emtbench
        result = emtbench.tailor(
            pretrained="llava-1.5-7b-hf", finetuned=["runs/llava-ft-cifar10"], calib_data=["emt:cifar10"],
            patch=0.1, omega=0.8, output="runs/tailored",
        )
    """
    if options is None:
        return merge(merge_options("model-tailor", **values))
    if values or options.method != "model-tailor":
        raise TypeError("tailor() takes MergeOptions(method='model-tailor') or keyword arguments")
    return merge(options)
