"""``emtbench demo``: the paper's forgetting experiment on the offline flagship, end to end, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Run the EMT forgetting experiment in miniature on the offline flagship MLLM (no network, no GPU), as a
recipe of the public commands -- every command it runs is printed, so you can rerun any step by hand:

  1. base model   `emtbench build-base` (shipped weights or cached; seconds), or --base-model DIR.
                  It is aligned on digits and Fashion-MNIST and has never seen Animal-MNIST.
  2. evaluate     `emtbench eval`: accuracy and failure-kind rates on held-out test images of
                  emt_animal_mnist (the target), emt_digits and emt_fashion_mnist (what it may forget),
                  and the LM's perplexity on Python's standard-library docstrings (emt_stdlib_ppl)
  3. fine-tune    `emtbench finetune --data emt:animal_mnist` (training split; the test split is held
                  out), 32 steps x 8 examples (one epoch of 256), with --snapshot-steps: each run is
                  also evaluated part-way (--quick: after 1/2; full: after 1/4 and 1/2), the
                  forgetting curve. Methods and learning rates (what a user fine-tuning LLaVA uses):
                    linear     projector only, --lr 2e-4 (the paper's fine-tuning rate 2e-5, finetune's
                               default, left a 32x8 pilot at 0% on Animal-MNIST; 2e-4 reached 10%)
                    lora       projector + LoRA, 2e-4 (LLaVA-1.5's LoRA recipe)
                  full demo adds:
                    msgm       LoRA + soft targets, 2e-4
                    full       projector + LM, 2e-5 (CL-LLaVA App. A, fine-tuning stage)
                    rehearsal  the lora run with --rehearsal-fraction of digits and Fashion-MNIST mixed in
  4. fuse         (full demo) `emtbench tailor` (Model Tailor) and `emtbench merge --method dare` on the
                  plain fine-tune that lost the most accuracy on digits + Fashion-MNIST; evaluate each
  5. compare      `emtbench leaderboard build` (the page plots the curve), then a table: accuracy per
                  task with Δ = run − base and its paired 95% bootstrap interval (! = excludes 0),
                  perplexity, answers that borrow an Animal-MNIST label, H-score, parameters changed

Each stage writes its own folder under --out, with stage.json once it finished. A rerun skips
finished stages (and says so); a stage whose options or inputs changed runs again. A failed stage
leaves nothing behind. Timings, the curve, every Δ with its interval and the findings are saved in
OUT/demo_report.json. --quick saves the same snapshots as the full demo, so `emtbench demo` in the
folder of a --quick run reuses its fine-tuning and evaluation stages.

Test images: --limit 64 per task, chosen before any result from the interval it gives and the time
budget (--quick <= 5 min, full <= 15 min on a 2-core CPU). On a paired difference the half-width is
about 1.96*sqrt(p_d - Δ²)/sqrt(N), p_d = the share of images the two models answer differently. The
target gain we expect (the base ~0% on Animal-MNIST, a pilot reached 10-18%) has p_d ≈ 0.2: ±10 points
at N = 64, below the gain. A loss on digits or Fashion-MNIST (p_d ≈ 0.1) needs about 8 points to show
(±7.6); --limit 200 narrows that to ±4.3 at about three times the evaluation time.

Examples:
  emtbench demo --quick                      # linear + lora, curve at 1/2 and the end (≤ 5 min)
  emtbench demo                              # all five runs, curve at 1/4, 1/2, end, Tailor + DARE
  emtbench demo --train-prompt eval          # train on the evaluation question with its label list
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
        "--quick", action="store_true", help="linear and lora, curve at 1/2 and the end, no fusion"
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
        help="seeded subset of the Animal-MNIST training split (default: %(default)s)",
    )
    sizes.add_argument(
        "--train-batch-size",
        type=int,
        default=defaults.train_batch_size,
        metavar="N",
        help="default: %(default)s",
    )
    sizes.add_argument(
        "--fp32-training",
        action="store_true",
        help="fine-tune in fp32 instead of bf16 mixed precision (LLaVA-1.5's scripts train with --bf16)",
    )
    sizes.add_argument(
        "--rehearsal-fraction",
        type=float,
        default=defaults.rehearsal_fraction,
        metavar="F",
        help="share of each alignment set (of --train-examples) the rehearsal run mixes in (default: %(default)s)",
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
        "--train-prompt",
        choices=("short", "eval"),
        default=defaults.train_prompt,
        help="training question: the paper's short fine-tuning question, or the evaluation prompt with "
        "its label list (default: %(default)s)",
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
        train_bf16=not args.fp32_training,
        train_steps=args.train_steps,
        train_examples=args.train_examples,
        train_batch_size=args.train_batch_size,
        train_prompt=args.train_prompt,
        rehearsal_fraction=args.rehearsal_fraction,
        calib_samples=args.calib_samples,
        eval_batch_size=args.eval_batch_size,
        max_gen_toks=args.max_gen_toks,
    )


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.demo.runner import run_demo

    print(run_demo(options_from_args(args)).text)
    return 0
