"""``emtbench tailor`` (Model Tailor) and ``emtbench merge`` (DARE, task arithmetic, TIES, grafting)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError

TAILOR_DESCRIPTION = """\
Fuse fine-tuned checkpoint(s) into the pre-trained one with Model Tailor (Zhu et al. 2024, SPEC §4):
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
Merge task vectors δ = fine-tuned − pre-trained into the pre-trained checkpoint with a baseline:

  task-arithmetic  Θ_pre + λ·Σ δ_t                                       (--weight λ)
  dare             drop δ entries with probability p, rescale by 1/(1−p)  (--drop-rate p, --seed)
  ties             trim to top --density by magnitude, elect signs, disjoint mean
  graft            learn a sparse mask over δ on the target loss (sigmoid relaxation), keep the
                   top --density share; needs --calib-data like `emtbench tailor`

Only parameters of the language model and projector that differ from pre-trained are merged;
embeddings, output head and vision tower stay pre-trained unless --copy-finetuned names them.

Examples:
  emtbench merge --method dare --pretrained llava-1.5-7b-hf --finetuned runs/ft --drop-rate 0.9 \\
      --seed 0 --output runs/dare
  emtbench merge --method graft --pretrained llava-1.5-7b-hf --finetuned runs/ft --density 0.1 \\
      --calib-data emt:cifar10 --calib-samples 64 --steps 100 --output runs/graft
"""

FROZEN_CHOICES = ("embeddings", "lm_head", "vision_tower")


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pretrained", required=True, metavar="DIR", help="pre-trained model folder")
    parser.add_argument(
        "--finetuned",
        required=True,
        action="append",
        metavar="DIR",
        help="fine-tuned model folder (same architecture); repeat for several tasks",
    )
    parser.add_argument(
        "--calib-data",
        action="append",
        default=[],
        metavar="SPEC",
        help="target-task conversations: emt:<name> or a LLaVA JSON; one per --finetuned, or one for all",
    )
    parser.add_argument(
        "--calib-samples", type=int, default=128, help="calibration examples per task (default 128)"
    )
    parser.add_argument(
        "--calib-batch-size", type=int, default=8, help="examples per calibration forward (default 8)"
    )
    parser.add_argument(
        "--calib-split", default="train", help="dataset split for emt:<name> data (default train)"
    )
    parser.add_argument("--image-root", default=None, help="folder LLaVA JSON image paths are relative to")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the calibration subset (and DARE's drops)"
    )
    parser.add_argument(
        "--layers",
        default=None,
        metavar="REGEX",
        help="only fuse parameters whose module name matches (re.search), e.g. 'layers\\.(2[0-9]|3[01])\\.'",
    )
    parser.add_argument(
        "--copy-finetuned",
        action="append",
        default=[],
        choices=FROZEN_CHOICES,
        help="take this part from the fine-tuned model(s) (mean) instead of pre-trained; repeatable",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="where to write the fused model")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing different run in --output"
    )
    parser.add_argument(
        "--push-to-hub", default=None, metavar="REPO_ID", help="upload the result to this Hub repo"
    )
    parser.add_argument("--private", action="store_true", help="make the --push-to-hub repo private")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def register(subparsers: argparse._SubParsersAction) -> None:
    from emtbench.methods.fusion.tailor import SCORE_MODES

    tailor = subparsers.add_parser(
        "tailor",
        help="fuse fine-tuned checkpoint(s) into the pre-trained one with Model Tailor",
        description=TAILOR_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_arguments(tailor)
    tailor.add_argument(
        "--patch", type=float, default=0.1, help="share of each block kept fine-tuned (default 0.1)"
    )
    tailor.add_argument("--omega", type=float, default=0.8, help="salience weight in the score (default 0.8)")
    tailor.add_argument("--blocksize", type=int, default=128, help="columns per block (default 128)")
    tailor.add_argument("--damp", type=float, default=0.01, help="Hessian damping, share of mean diagonal")
    tailor.add_argument(
        "--score",
        choices=SCORE_MODES,
        default="released",
        help="score normalisation: paper = min-max, released = per-row z-score (default)",
    )
    tailor.set_defaults(handler=run_tailor)

    from emtbench.methods.fusion.merge import MERGE_METHODS

    merge = subparsers.add_parser(
        "merge",
        help="merge task vectors with DARE, task arithmetic, TIES or grafting",
        description=MERGE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge.add_argument("--method", required=True, choices=sorted(MERGE_METHODS), help="merge method")
    _common_arguments(merge)
    merge.add_argument(
        "--density",
        type=float,
        default=None,
        help="share of δ kept (default: ties 0.2, graft 0.1; for dare it means 1 − p)",
    )
    merge.add_argument("--drop-rate", type=float, default=None, help="DARE drop probability p (default 0.9)")
    merge.add_argument("--weight", type=float, default=1.0, help="λ, scale of the merged task vector")
    merge.add_argument("--steps", type=int, default=100, help="graft: optimisation steps (default 100)")
    merge.add_argument("--lr", type=float, default=0.1, help="graft: Adam learning rate of the mask logits")
    merge.set_defaults(handler=run_merge)


# ----------------------------------------------------------------------------- shared steps


def _calibration_specs(args: argparse.Namespace, *, required: bool) -> list[str]:
    specs = list(args.calib_data)
    if not specs:
        if required:
            raise EmtbenchError(
                "calibration data is required", where="--calib-data", fix="e.g. --calib-data emt:cifar10"
            )
        return []
    if len(specs) == 1:
        return specs * len(args.finetuned)
    if len(specs) != len(args.finetuned):
        raise EmtbenchError(
            f"{len(specs)} --calib-data for {len(args.finetuned)} --finetuned",
            where="--calib-data",
            fix="give one --calib-data per --finetuned (in the same order), or a single one for all",
        )
    return specs


def _check_common(args: argparse.Namespace) -> None:
    if args.calib_samples < 1 or args.calib_batch_size < 1:
        raise EmtbenchError("--calib-samples and --calib-batch-size must be positive")
    if args.layers is not None:
        try:
            re.compile(args.layers)
        except re.error as error:
            raise EmtbenchError(f"not a regular expression ({error})", where="--layers") from None


def _prepare(args: argparse.Namespace, run: dict[str, Any], specs: list[str]):
    """Everything that can fail on bad input, before weights are loaded: output, shapes, calibration."""
    from emtbench.core.records import check_output_dir
    from emtbench.methods.fusion.checkpoints import calibration_batches, check_compatible, load_processor

    check_output_dir(Path(args.output), run, overwrite=args.overwrite)
    check_compatible(args.pretrained, args.finetuned)
    processor = load_processor(args.pretrained)
    calibration = [
        calibration_batches(
            spec,
            processor,
            samples=args.calib_samples,
            batch_size=args.calib_batch_size,
            seed=args.seed,
            split=args.calib_split,
            image_root=args.image_root,
        )
        for spec in specs
    ]
    return processor, calibration


def _load(args: argparse.Namespace):
    import torch

    from emtbench.methods.fusion.checkpoints import copy_finetuned_parts, load_model, open_checkpoint

    # Only the model being fused is held whole; the pre-trained and fine-tuned values are read from
    # their safetensors one parameter at a time (open_checkpoint falls back to loading them whole).
    model = load_model(args.pretrained)
    pretrained_state = open_checkpoint(
        args.pretrained,
        model,
        eager=lambda: {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
    )
    finetuned = [open_checkpoint(path, model) for path in args.finetuned]
    with torch.no_grad():
        copied = copy_finetuned_parts(model, finetuned, args.copy_finetuned)
    return model, pretrained_state, finetuned, copied


def _finish(args, model, processor, pretrained_state, finetuned, run: dict[str, Any], layers: dict) -> int:
    from emtbench.core.records import write_model_dir
    from emtbench.hub.cards import model_card
    from emtbench.hub.push import push_to_hub
    from emtbench.methods.fusion.checkpoints import changed_fraction

    stats = changed_fraction(model, pretrained_state)
    current = model.state_dict()
    left_pretrained = sorted(
        name
        for name, tensor in current.items()
        if torch_equal(tensor, pretrained_state[name])
        and any(not torch_equal(state[name], pretrained_state[name]) for state in finetuned)
    )
    run["parameters"] = {
        "changed_fraction": stats["changed_fraction"],
        "changed": stats["changed"],
        "total": stats["total"],
    }
    run["layers"] = layers
    run["changed_share_per_tensor"] = stats["per_tensor"]
    run["fine_tuned_but_left_pretrained"] = left_pretrained

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    output = write_model_dir(args.output, save, run, overwrite=args.overwrite, card=model_card)
    print(
        f"wrote {output}: {stats['changed_fraction']:.4%} of {stats['total']:,} parameters differ from pre-trained"
    )
    if args.push_to_hub:
        print(f"pushed: {push_to_hub(output, args.push_to_hub, private=args.private)}")
    return 0


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b.to(a.dtype)))


def _base_run(
    args: argparse.Namespace, method: str, settings: dict[str, Any], specs: list[str]
) -> dict[str, Any]:
    return {
        "method": method,
        "base_model": args.pretrained,
        "finetuned": list(args.finetuned),
        "settings": {
            **settings,
            "layers": args.layers,
            "copy_finetuned": sorted(args.copy_finetuned),
            "calib_samples": args.calib_samples if specs else None,
            "calib_batch_size": args.calib_batch_size if specs else None,
            "calib_split": args.calib_split if specs else None,
            "seed": args.seed,
        },
        "data": {"calibration": specs} if specs else None,
    }


# ----------------------------------------------------------------------------- commands


def run_tailor(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.methods.fusion.tailor import TailorConfig

    config = TailorConfig(
        patch=args.patch, omega=args.omega, blocksize=args.blocksize, damp=args.damp, score=args.score
    )
    config.check()
    _check_common(args)
    specs = _calibration_specs(args, required=True)
    settings = {
        "patch": config.patch,
        "omega": config.omega,
        "blocksize": config.blocksize,
        "damp": config.damp,
        "score": config.score,
        "compensation": "obs (subtract)",
    }
    run = _base_run(
        args, "model-tailor" if len(args.finetuned) == 1 else "model-tailor-multitask", settings, specs
    )
    processor, calibration = _prepare(args, run, specs)

    from emtbench.methods.fusion.driver import tailor_model

    model, pretrained_state, finetuned, copied = _load(args)
    reports = tailor_model(
        model, finetuned, calibration, config, layers=args.layers, progress=not args.no_progress
    )
    layers = {
        report.name: {"status": report.status, "changed_share": report.changed_share} for report in reports
    }
    for name in copied:
        layers[name] = {"status": "copied from fine-tuned", "changed_share": None}
    return _finish(args, model, processor, pretrained_state, finetuned, run, layers)


def run_merge(args: argparse.Namespace, extra: list[str]) -> int:
    import torch

    from emtbench.methods.fusion.checkpoints import frozen_prefixes
    from emtbench.methods.fusion.merge import MergeContext, MergeSettings, get_merge_method, iter_merged

    method = get_merge_method(args.method)
    settings = MergeSettings(
        density=args.density,
        drop_rate=args.drop_rate,
        weight=args.weight,
        seed=args.seed,
        steps=args.steps,
        lr=args.lr,
    )
    settings.check()
    _check_common(args)
    specs = _calibration_specs(args, required=method.needs_calibration)
    run_settings = {
        "density": args.density,
        "drop_rate": args.drop_rate,
        "weight": args.weight,
        **({"steps": args.steps, "lr": args.lr} if method.needs_calibration else {}),
    }
    run = _base_run(args, method.name, run_settings, specs)
    processor, calibration = _prepare(args, run, specs)
    model, pretrained_state, finetuned, copied = _load(args)

    pattern = re.compile(args.layers) if args.layers else None
    frozen = tuple(frozen_prefixes(model, args.copy_finetuned).values())
    names = [
        name
        for name, parameter in model.named_parameters()
        if parameter.is_floating_point()
        and not any(name == prefix or name.startswith(prefix + ".") for prefix in frozen)
        and (pattern is None or pattern.search(name))
        and any(not torch_equal(state[name], pretrained_state[name]) for state in finetuned)
    ]
    if not names:
        raise EmtbenchError(
            "no selected parameter differs between the pre-trained and fine-tuned models",
            where="--finetuned" if pattern is None else "--layers",
            fix="check that --finetuned was fine-tuned from --pretrained (and that --layers matches its layers)",
        )
    merged = iter_merged(
        method,
        pretrained_state,
        finetuned,
        names,
        settings,
        MergeContext(model=model, calibration=calibration, progress=not args.no_progress),
    )
    for name, value in merged:  # written as each parameter is merged: no second copy of the weights
        with torch.no_grad():  # only around the write: graft's optimisation runs inside the iterator
            model.get_parameter(name).copy_(value)
    layers = {name: {"status": "merged"} for name in names}
    for name in copied:
        layers[name] = {"status": "copied from fine-tuned"}
    return _finish(args, model, processor, pretrained_state, finetuned, run, layers)
