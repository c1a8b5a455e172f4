"""``emtbench convert``: bring checkpoints from other training stacks into the transformers format."""

from __future__ import annotations

import argparse

CONVERT_PRISMATIC_HELP = """\
Convert a Prismatic VLM run directory (config.json + checkpoints/latest-checkpoint.pt) into a
transformers LLaVA checkpoint that `emtbench eval --model hf-multimodal`, fine-tuning and fusion use
directly. The processor gets the Prismatic prompt format of the LLM as its chat template, and the
image resize strategy of the run (resize-naive / resize-crop / letterbox) as its preprocessing.

Convertible backbones (anything else is refused, naming it):
  vision: clip-vit-b, clip-vit-l, clip-vit-l-336px, siglip-vit-b16-{224,256,384}px,
          siglip-vit-so400m, siglip-vit-so400m-384px
  LLM:    llama2-{7,13}b-{pure,chat}, vicuna-v15-{7,13}b, mistral-v0.1-7b-{pure,instruct},
          phi-2-3b (only with a zero LM-head bias), pythia-{160m,410m,1b,1p4b}
  projector (arch_specifier): linear, gelu-mlp

The checkpoint is read with torch.load(weights_only=True): only tensors, never arbitrary pickles.
The vision tower weights and the LLM tokenizer/config come from the backbones' Hub checkpoints;
pass local folders with --vision-tower / --llm to stay offline.

Example:
  emtbench convert prismatic runs/prism-clip+7b+stage-finetune+x7 --output models/prism-clip-7b-hf
  emtbench eval --model hf-multimodal --model_args pretrained=models/prism-clip-7b-hf \\
      --tasks emt --apply_chat_template --batch_size 8 --output_path results/
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="convert checkpoints from other formats (Prismatic) to transformers",
        description="Convert checkpoints from other training stacks into transformers checkpoints.\n\n"
        "Example:\n  emtbench convert prismatic runs/prism-clip+7b --output models/prism-clip-7b-hf\n"
        "Run `emtbench convert prismatic --help` for the supported backbones and options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    formats = convert.add_subparsers(dest="format", metavar="FORMAT", required=True)
    prismatic = formats.add_parser(
        "prismatic",
        help="Prismatic VLM run directory -> transformers LLaVA checkpoint",
        description=CONVERT_PRISMATIC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prismatic.add_argument("run_dir", metavar="RUN_DIR", help="Prismatic run directory (holds config.json)")
    prismatic.add_argument(
        "--output", required=True, metavar="HF_DIR", help="folder to write the checkpoint to"
    )
    prismatic.add_argument(
        "--checkpoint",
        metavar="PT",
        help="checkpoint file (default: RUN_DIR/checkpoints/latest-checkpoint.pt)",
    )
    prismatic.add_argument(
        "--vision-tower",
        metavar="ID_OR_DIR",
        help="transformers vision tower (default: the backbone's Hub id)",
    )
    prismatic.add_argument(
        "--llm", metavar="ID_OR_DIR", help="LLM config + tokenizer source (default: the backbone's Hub id)"
    )
    prismatic.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    prismatic.set_defaults(handler=run_convert_prismatic)


def run_convert_prismatic(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.core.progress import progress_bar
    from emtbench.models.prismatic.convert import convert_prismatic

    with progress_bar(total=5, desc="convert prismatic", unit="step") as bar:

        def progress(message: str) -> None:
            bar.set_postfix_str(message[-60:])
            bar.update(1)

        out = convert_prismatic(
            args.run_dir,
            args.output,
            vision_tower=args.vision_tower,
            llm=args.llm,
            checkpoint=args.checkpoint,
            overwrite=args.overwrite,
            progress=progress,
        )
    print(f"wrote {out}")
    return 0
