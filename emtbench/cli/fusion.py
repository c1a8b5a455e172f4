"""``emtbench tailor`` (Model Tailor) and ``emtbench merge`` (DARE, task arithmetic, TIES, grafting)."""

from __future__ import annotations

import argparse

TAILOR_DESCRIPTION = """\
Fuse fine-tuned checkpoint(s) into the pre-trained one with Model Tailor (Zhu et al. 2024, §4):
keep a sparse patch of fine-tuned weights per linear layer (the --patch share of each block of
--blocksize columns, chosen by a fused salience/sensitivity score), revert the rest to pre-trained,
and compensate the patch (OBS, SparseGPT-style) so the layer output on target-task calibration data
stays close to the fine-tuned one. Layers are processed in forward order (projector, then each
decoder layer), each calibrated through the already-tailored earlier layers with the model's own
attention mask and position ids. Linear layers identical to pre-trained are skipped; embeddings,
the output head, the vision tower and norms stay pre-trained unless --copy-finetuned names them.

Several --finetuned models (one --calib-data each, or one for all) give the paper's multi-task
fusion: union of the masks, mean of the compensations.

Compensation sign: we subtract the OBS update (SparseGPT); the released Model Tailor code adds it,
which provably raises the layer-output error above masking alone (see emtbench/methods/fusion/tailor.py).

Example:
  emtbench tailor --pretrained llava-1.5-7b-hf --finetuned runs/llava-ft-cifar10 \\
      --calib-data emt:cifar10 --calib-samples 128 --patch 0.1 --omega 0.8 \\
      --layers 'language_model\\.layers\\.(2[0-9]|3[01])\\.|multi_modal_projector' --output runs/tailored
"""

MERGE_DESCRIPTION = """\
Merge task vectors δ = fine-tuned − pre-trained into the pre-trained checkpoint:

{methods}

Only parameters of the language model and projector that differ from pre-trained are merged;
embeddings, output head and vision tower stay pre-trained unless --copy-finetuned names them.

Examples:
  emtbench merge --method dare --pretrained llava-1.5-7b-hf --finetuned runs/ft --drop-rate 0.9 \\
      --seed 0 --output runs/dare
  emtbench merge --method graft --pretrained llava-1.5-7b-hf --finetuned runs/ft --density 0.1 \\
      --calib-data emt:cifar10 --calib-samples 64 --steps 100 --output runs/graft
"""

COMMON_FIELDS = (
    "pretrained", "finetuned", "calib_data", "calib_samples", "calib_batch_size", "calib_split",
    "image_root", "seed", "layers", "copy_finetuned", "output", "overwrite", "push_to_hub", "private",
    "progress",
)  # fmt: skip
"""The MergeOptions fields both commands take (the rest are the method and its parameters)."""


def method_table() -> str:
    from emtbench.methods.fusion.base import MERGE_METHODS

    return "\n".join(
        f"  {m.name:<16} {m.summary}{' (needs --calib-data)' if m.needs_calibration else ''}"
        for m in MERGE_METHODS.values()
    )


def parameter_owners() -> dict[type, list[str]]:
    """Each parameters dataclass that declares fields, with the merge methods whose parameters include it."""
    import dataclasses
    import inspect

    from emtbench.methods.fusion.base import MERGE_METHODS

    found: dict[type, list[str]] = {}
    for method in MERGE_METHODS.values():
        for cls in method.parameters_class.__mro__:
            if dataclasses.is_dataclass(cls) and inspect.get_annotations(cls):
                found.setdefault(cls, []).append(method.name)
    return found


def add_parameter_flags(parser: argparse.ArgumentParser, *, only_method: str | None = None) -> None:
    """The methods' own flags, one group per parameters dataclass, titled with the methods that take it."""
    import inspect

    from emtbench.core.options import add_options

    for cls, methods in parameter_owners().items():
        if only_method is not None:
            if only_method not in methods:
                continue
            title = "Model Tailor"
        else:
            title = " / ".join(methods)
        add_options(parser.add_argument_group(f"{title} parameters"), cls, only=inspect.get_annotations(cls))


def register(subparsers: argparse._SubParsersAction) -> None:
    from emtbench.core.options import add_options
    from emtbench.methods.fusion.base import MERGE_METHODS
    from emtbench.methods.fusion.pipeline import MergeOptions

    tailor = subparsers.add_parser(
        "tailor",
        help="fuse fine-tuned checkpoint(s) into the pre-trained one with Model Tailor",
        description=TAILOR_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(tailor, MergeOptions, only=COMMON_FIELDS)
    add_parameter_flags(tailor, only_method="model-tailor")
    tailor.set_defaults(handler=run_tailor)

    merge = subparsers.add_parser(
        "merge",
        help="merge task vectors with DARE, task arithmetic, TIES or grafting",
        description=MERGE_DESCRIPTION.replace("{methods}", method_table()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge.add_argument("--method", required=True, choices=sorted(MERGE_METHODS), help="merge method")
    add_options(merge, MergeOptions, only=COMMON_FIELDS)
    add_parameter_flags(merge)
    merge.set_defaults(handler=run_merge)


def options_from_args(args: argparse.Namespace, method: str):
    """MergeOptions of the typed flags; a parameter flag of another method is refused by name."""
    import dataclasses

    from emtbench.core.errors import EmtbenchError
    from emtbench.core.options import flag_of, from_namespace, given
    from emtbench.methods.fusion.base import get_merge_method
    from emtbench.methods.fusion.pipeline import MergeOptions

    method_object = get_merge_method(method)
    values = given(args, method_object.parameters_class)
    for cls, methods in parameter_owners().items():
        for name in given(args, cls):
            if name not in values:
                field = next(f for f in dataclasses.fields(cls) if f.name == name)
                raise EmtbenchError(
                    f"{flag_of(field)} is a parameter of {' / '.join(methods)}, not of {method!r}",
                    where=flag_of(field),
                    fix=f"drop it, or use --method {' or '.join(methods)}",
                )
    return from_namespace(
        MergeOptions, args, method=method, parameters=method_object.parameters_class(**values)
    )


def _report(result) -> None:
    print(
        f"wrote {result.output}: {result.changed_fraction:.4%} of "
        f"{result.record['parameters']['total']:,} parameters differ from pre-trained"
    )
    if result.hub_url:
        print(f"pushed: {result.hub_url}")


def run_tailor(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.methods.fusion.pipeline import tailor

    _report(tailor(options_from_args(args, "model-tailor")))
    return 0


def run_merge(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.methods.fusion.pipeline import merge

    _report(merge(options_from_args(args, args.method)))
    return 0
