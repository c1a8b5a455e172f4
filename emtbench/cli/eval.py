"""``emtbench eval`` (lm-eval with the EMT tasks and models) and ``emtbench tasks-dir``."""

from __future__ import annotations

import argparse

from emtbench.tasks import TASKS_DIR

EVAL_HELP = f"""\
usage: emtbench eval [lm_eval arguments]

Runs lm-evaluation-harness with the EMT tasks added to --include_path (any path you pass is kept)
and emtbench's lm-eval models registered. Every other argument goes to lm_eval unchanged.

EMT tasks: emt_mnist emt_cifar10 emt_cifar100 emt_miniimagenet emt_fashion_mnist emt_digits
groups:    emt (the paper's four), emt_offline (digits + Fashion-MNIST, no Hub needed)
language:  emt_linguistic = emt_linguistic_nlu (arc_easy arc_challenge winogrande wsc273)
           + emt_linguistic_nlg (lambada_openai); works with --model hf-multimodal and hf;
           emt_stdlib_ppl: offline perplexity on standard-library docstrings (no Hub needed)
VL:        emt_vl = emt_vqav2_slim emt_gqa_slim emt_textvqa_slim emt_refcoco_slim (TRI-ML slim
           1024 splits; emt_vqav2 ... and emt_vl_full for the full splits); data_dir = original
           annotation files + images (see emtbench/tasks/vl/README.md), else the Hub

Select data with --metadata (JSON):
  data_dir   local copy: image folder with one sub-folder per class, or parquet/arrow files
  split      dataset split (default: test)
  fraction   evaluate a fixed random share of the split (the paper: 0.2 of train)
  seed       seed of that share (default 0)
  source     auto (Hub, else offline copy) | hub | offline
  judge      rule (default) | embedding | llm | local_llm | cascade (local_llm with the default SmolLM2-135M is a weak judge)
             (judge options such as judge_model: see `emtbench judge-agreement --help`)

Example:
  emtbench eval --model hf-multimodal --model_args pretrained=llava-hf/llava-1.5-7b-hf \\
      --tasks emt_cifar10 --apply_chat_template --batch_size 8 --output_path results/ \\
      --metadata '{{"split": "train", "fraction": 0.2, "seed": 0}}'

Plain lm_eval works too: lm_eval --include_path {TASKS_DIR} --tasks emt_cifar10 ...

lm_eval's own options follow.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    eval_parser = subparsers.add_parser(
        "eval",
        help="run lm-eval with the EMT tasks (all lm_eval arguments pass through)",
        add_help=False,
    )
    eval_parser.set_defaults(handler=run_eval, accepts_extra=True)
    dir_parser = subparsers.add_parser(
        "tasks-dir",
        help='print the EMT task folder, for `lm_eval --include_path "$(emtbench tasks-dir)"`',
        description="Print the folder holding the EMT task YAMLs, for plain lm_eval's --include_path.",
    )
    dir_parser.set_defaults(handler=lambda args, extra: print(TASKS_DIR))


def _requested_tasks(argv: list[str]) -> list[str]:
    for index, arg in enumerate(argv):
        if arg == "--tasks" and index + 1 < len(argv):
            return argv[index + 1].split(",")
        if arg.startswith("--tasks="):
            return arg.split("=", 1)[1].split(",")
    return []


def run_eval(args: argparse.Namespace, argv: list[str]) -> int:
    from emtbench.tasks.evaluation import run_lm_eval
    from emtbench.tasks.runtime import check_metadata_keys, cli_metadata

    if not argv or argv[0] in ("-h", "--help"):
        print(EVAL_HELP)
        argv = ["run", "--help"]
    elif any(task.startswith("emt") for task in _requested_tasks(argv)):
        check_metadata_keys(cli_metadata(argv))  # fail before a model is loaded
    return run_lm_eval(argv)
