"""``emtbench card``: (re)write a model folder's Hub card, with what the model forgot."""

from __future__ import annotations

import argparse

CARD_HELP = """\
Rewrite DIR/README.md from DIR's emtbench_run.json as a Hugging Face model card: base_model,
library_name (peft for adapters), pipeline_tag, datasets, license, tags, the exact command and
versions. With --results (lm-eval output of this model, run with --log_samples) it adds each task's
accuracy with a 95% bootstrap interval; with --base-results (the base model's run on the same tasks)
Δ against the base; and the H-score of the tasks trained on against the others. The numbers go into
the card's text and its model-index, so the Hub page shows what the model forgot.

Example:
  emtbench eval --model hf-multimodal --model_args pretrained=runs/ft --tasks emt \\
      --apply_chat_template --log_samples --output_path results/ft
  emtbench card runs/ft --results results/ft --base-results results/base
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "card", help="write a model folder's Hub card with its forgetting results",
        description=CARD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("folder", metavar="DIR", help="model folder written by an emtbench command")
    parser.add_argument("--results", metavar="RESULTS", help="lm-eval --output_path of this model")
    parser.add_argument("--base-results", metavar="RESULTS", help="lm-eval --output_path of its base model")
    parser.add_argument(
        "--name", help="the card's title and model-index name (default: Hub id or folder name)"
    )
    parser.add_argument(
        "--target", action="append", metavar="TASK",
        help="task the model was trained for, for the H-score (default: the run's emt: training data)",
    )  # fmt: skip
    parser.set_defaults(handler=run_card)


def run_card(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.core.errors import EmtbenchError
    from emtbench.hub.cards import write_card

    if args.base_results and not args.results:
        raise EmtbenchError("--base-results needs --results", where="--base-results")
    path = write_card(
        args.folder, results=args.results, base_results=args.base_results, name=args.name, target=args.target
    )
    print(f"wrote {path}")
    return 0
