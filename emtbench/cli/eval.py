"""``emtbench eval`` (lm-eval with the EMT tasks and models) and ``emtbench tasks-dir``."""

from __future__ import annotations

import argparse

from emtbench.tasks import TASKS_DIR

EVAL_HELP = """\
usage: emtbench eval [lm_eval arguments]

Runs lm-evaluation-harness with the EMT tasks added to --include_path (any path you pass, on the
command line or in a --config file, is kept) and emtbench's lm-eval models registered. Every other
argument goes to lm_eval unchanged. A misspelt task gets the closest task names; a model whose
processor has a chat template, run with hf-multimodal but without --apply_chat_template, is warned
about before the run. Each EMT task's results record the judge (name, model, prompt hash) and the
emtbench version under configs.TASK.metadata.emtbench; the groups report every failure-kind rate.

EMT tasks: {emt_tasks}
groups:    emt (the paper's four), emt_offline (digits + Fashion-MNIST, no Hub needed)
language:  emt_linguistic = emt_linguistic_nlu (arc_easy arc_challenge winogrande wsc273)
           + emt_linguistic_nlg (lambada_openai); works with --model hf-multimodal and hf;
           emt_stdlib_ppl: offline perplexity on standard-library docstrings (no Hub needed)
VL:        emt_vl = emt_vqav2_slim emt_gqa_slim emt_textvqa_slim emt_refcoco_slim (TRI-ML slim
           1024 splits; emt_vqav2 ... and emt_vl_full for the full splits); data_dir = original
           annotation files + images (see emtbench/tasks/vl/README.md), else the Hub

Select data with --metadata (JSON):
{data_options}
  judge      the judge of the answers (default rule), with its options:
{judges}
  (acc is accuracy over the answers the judge could judge; judge_coverage beside it is the share it
  could: an unreachable judge lowers coverage, never acc)

Example:
  emtbench eval --model hf-multimodal --model_args pretrained=llava-hf/llava-1.5-7b-hf \\
      --tasks emt_cifar10 --apply_chat_template --batch_size 8 --output_path results/ \\
      --metadata '{"split": "train", "fraction": 0.2, "seed": 0}'

Plain lm_eval works too: lm_eval --include_path {tasks_dir} --tasks emt_cifar10 ...

lm_eval's own options follow.
"""


def eval_help() -> str:
    """EVAL_HELP with the EMT tasks, the data options and the judges filled in from their registries."""
    from emtbench.core.options import cli_fields
    from emtbench.datasets.emt import DATASETS
    from emtbench.datasets.loading import DataOptions
    from emtbench.judges.base import judges_help

    data = "\n".join(f"  {f.name:<10} {f.metadata['help']}" for f in cli_fields(DataOptions))
    return (
        EVAL_HELP.replace("{emt_tasks}", " ".join(d.task for d in DATASETS.values()))
        .replace("{data_options}", data)
        .replace("{judges}", judges_help(indent="    "))
        .replace("{tasks_dir}", str(TASKS_DIR))
    )


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


def check_local_model(argv: list[str]) -> None:
    """A ``pretrained=`` folder given in ``--model_args`` has a readable config.json (checked strictly)."""
    from emtbench.models.checked import check_config_file
    from emtbench.tasks.evaluation import option_value

    value = option_value(argv, "--model_args")
    if not value or value.lstrip().startswith("{"):
        return
    for item in value.split(","):
        key, _, path = item.partition("=")
        if key.strip() == "pretrained" and path:
            check_config_file(path.strip(), where="--model_args pretrained", required=False)


def run_eval(args: argparse.Namespace, argv: list[str]) -> int:
    from emtbench.tasks.evaluation import check_eval_argv, run_lm_eval

    if not argv or argv[0] in ("-h", "--help"):
        print(eval_help())
        argv = ["run", "--help"]
    else:
        check_local_model(argv)
        check_eval_argv(argv)  # --limit, malformed --metadata, EMT metadata keys: before a model loads
    return run_lm_eval(argv)
