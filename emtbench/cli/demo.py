"""``emtbench demo``: the paper's forgetting experiment on the offline flagship, end to end, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Run the EMT forgetting experiment end to end on the offline flagship MLLM (no network, no GPU), as a
recipe of the public commands -- every command it runs is printed, so you can rerun any step by hand:

  1. base model   `emtbench build-base` (cached; returns at once once built), or --base-model DIR
  2. evaluate     `emtbench eval`: EMT accuracy and failure-kind rates on held-out test images of
                  emt_digits and emt_fashion_mnist, and the LM's perplexity on Python's own
                  standard-library docstrings (emt_stdlib_ppl, the offline stand-in for the online
                  emt_linguistic suite)
  3. fine-tune    `emtbench finetune --data emt:digits` (training split; the test split is held out)
                  with --method linear, lora, msgm, and full (not with --quick); evaluate each
  4. fuse         `emtbench tailor` (Model Tailor) and `emtbench merge --method dare` on the LoRA
                  model (and the full one without --quick); evaluate each
  5. compare      `emtbench leaderboard build`, then a table per run: accuracy per task, perplexity,
                  Δ (forgetting) and H-score, and the path of the page

Each stage writes its own folder under --out, with stage.json once it finished. A rerun skips
finished stages (and says so); a stage whose options or inputs changed runs again. A failed stage
leaves nothing behind. Timings per stage are printed and saved in OUT/demo_report.json.

Sizes are small so the whole run fits a laptop CPU; raise them for tighter numbers. --quick and the
full demo use the same sizes, so a full run in the folder of a --quick run reuses its stages.

Examples:
  emtbench demo --quick                      # a few minutes once the base model is cached
  emtbench demo                              # the full demo: adds full fine-tuning and its fusions
  emtbench demo --base-model models/my-flagship --limit 100 --out demo-100
  emtbench leaderboard serve emtbench-demo/leaderboard/site   # look at the page
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from emtbench.demo.options import DemoOptions

    defaults = DemoOptions(out=Path("."))
    parser = subparsers.add_parser(
        "demo",
        help="run the whole forgetting experiment offline on the flagship (build, eval, fine-tune, fuse, leaderboard)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="linear, lora and msgm only; Model Tailor and DARE on lora only"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("emtbench-demo"),
        help="folder for every stage (default: %(default)s)",
    )
    parser.add_argument(
        "--base-model",
        type=Path,
        metavar="DIR",
        help="use this model folder instead of `emtbench build-base`",
    )
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument(
        "--limit",
        type=int,
        default=defaults.limit,
        metavar="N",
        help="held-out test images evaluated per EMT task (default: %(default)s)",
    )
    sizes.add_argument(
        "--language-docs",
        type=int,
        default=defaults.language_docs,
        metavar="N",
        help="stdlib module docstrings (of 20, fixed order) for perplexity (default: %(default)s)",
    )
    sizes.add_argument(
        "--train-steps",
        type=int,
        default=defaults.train_steps,
        metavar="N",
        help="optimizer steps per fine-tuning method (default: %(default)s)",
    )
    sizes.add_argument(
        "--train-examples",
        type=int,
        default=defaults.train_examples,
        metavar="N",
        help="seeded subset of the digits training split (default: %(default)s)",
    )
    sizes.add_argument(
        "--train-batch-size",
        type=int,
        default=defaults.train_batch_size,
        metavar="N",
        help="default: %(default)s",
    )
    sizes.add_argument(
        "--calib-samples",
        type=int,
        default=defaults.calib_samples,
        metavar="N",
        help="Model Tailor calibration examples (default: %(default)s)",
    )
    sizes.add_argument(
        "--eval-batch-size",
        type=int,
        default=defaults.eval_batch_size,
        metavar="N",
        help="default: %(default)s",
    )
    sizes.add_argument(
        "--max-gen-toks",
        type=int,
        default=defaults.max_gen_toks,
        metavar="N",
        help="answer length cap for the EMT probes (the tasks' own cap is 64; default: %(default)s)",
    )
    parser.add_argument(
        "--tailor-layers",
        default=defaults.tailor_layers,
        metavar="REGEX",
        help="linear layers Model Tailor fuses; the others revert to the base (default: %(default)s)",
    )
    parser.add_argument(
        "--device", default=None, help="evaluation device (default: cuda when available, else cpu)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="default: %(default)s")
    parser.set_defaults(handler=run)


def options_from_args(args: argparse.Namespace):
    from emtbench.demo.options import DemoOptions

    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return DemoOptions(
        out=args.out.expanduser().resolve(),
        quick=args.quick,
        base_model=None if args.base_model is None else args.base_model.expanduser().resolve(),
        tailor_layers=args.tailor_layers,
        device=device,
        seed=args.seed,
        limit=args.limit,
        language_docs=args.language_docs,
        train_steps=args.train_steps,
        train_examples=args.train_examples,
        train_batch_size=args.train_batch_size,
        calib_samples=args.calib_samples,
        eval_batch_size=args.eval_batch_size,
        max_gen_toks=args.max_gen_toks,
    )


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.demo.runner import run_demo

    print(run_demo(options_from_args(args)).text)
    return 0
