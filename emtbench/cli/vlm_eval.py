"""``emtbench vlm-eval``: run TRI-ML vlm-evaluation's scripts with the EMT probes, and collect results."""

from __future__ import annotations

import argparse
from pathlib import Path

RUN_HELP = """\
usage: emtbench vlm-eval run SCRIPT [SCRIPT ARGUMENTS]

Runs one of vlm-evaluation's own scripts (from your checkout of TRI-ML/vlm-evaluation, installed with
`pip install --no-deps -e CHECKOUT` plus `pip install 'emtbench[vlm-eval]'`) with the EMT probes added
to its dataset registry, config choices, harness tables and models. Every argument after SCRIPT goes to
the script unchanged (draccus flags).

EMT dataset ids (--dataset.type), one pair per probe (mnist cifar10 cifar100 miniimagenet digits fashion-mnist):
  emt-<probe>-test                 the test split, every image (= emtbench eval's default)
  emt-<probe>-train-20pct-seed0    the paper's protocol: a random 20% of train, seed 0
Override the subset and judge with the fields emtbench eval takes as --metadata:
  --dataset.split S --dataset.fraction F --dataset.seed N --dataset.data_dir DIR --dataset.source auto|hub|offline
  --dataset.judge rule|embedding|llm|local_llm|cascade --dataset.judge_options '{"judge_model": "..."}'
(the dataset id, index file and expected example count follow from them).

Model families: vlm-evaluation's own (prismatic, llava-v15, instruct-blip; EMT prompt = the model's
conversation format around the EMT question), and emtbench-hf: any transformers checkpoint in
--model_dir, prompted and decoded as `emtbench eval --model hf-multimodal --apply_chat_template`.

Example (prepare, evaluate, score; then collect for the leaderboard):
  emtbench vlm-eval run vlm-evaluation/scripts/datasets/prepare.py --dataset_family emt-digits \\
      --root_dir data/vlm-eval --hf_token HF_TOKEN
  emtbench vlm-eval run vlm-evaluation/scripts/evaluate.py --dataset.type emt-digits-test \\
      --dataset.root_dir data/vlm-eval --model_family emtbench-hf --model_id my-model \\
      --model_dir checkpoints/my-model --results_dir results --hf_token HF_TOKEN
  emtbench vlm-eval run vlm-evaluation/scripts/score.py --dataset.type emt-digits-test \\
      --dataset.root_dir data/vlm-eval --model_id my-model --results_dir results
  emtbench vlm-eval collect results --model_id my-model --output results/emtbench/my-model
(--hf_token names an environment variable holding a token, or a file; vlm-evaluation reads it.)

Each scored dataset folder (results/<family>/<dataset_id>/<model_id>/) also holds lm-eval's
results_<date>.json and samples_<task>_<date>.jsonl with every per-sample verdict.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "vlm-eval",
        help="run the EMT probes in TRI-ML vlm-evaluation (Prismatic's harness); collect its results",
        description="Run the EMT probes inside TRI-ML vlm-evaluation, scored with emtbench's judges.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="vlm_eval_command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="run a vlm-evaluation script (prepare.py, evaluate.py, score.py) with the EMT probes",
        add_help=False,
    )
    run.add_argument("script", nargs="?")
    run.set_defaults(handler=_run, accepts_extra=True)
    collect = commands.add_parser(
        "collect",
        help="merge one model's scored EMT datasets into one lm-eval results folder for the leaderboard",
        description="Merge one model's scored EMT datasets (results_dir/emt-*/<dataset_id>/<model_id>/) into "
        "one folder holding one results_<date>.json and its samples files: the folder a leaderboard "
        "manifest's `results:` names. Earlier results_*.json / samples_*.jsonl in --output are replaced.",
    )
    collect.add_argument("results_dir", type=Path, help="vlm-evaluation's --results_dir")
    collect.add_argument("--model_id", required=True, help="the --model_id the datasets were evaluated with")
    collect.add_argument("--output", required=True, type=Path, help="folder to write (created if missing)")
    collect.add_argument(
        "--datasets",
        default=None,
        help="comma-separated dataset ids to take (default: every EMT dataset id scored for the model; "
        "needed when one probe was scored on two subsets)",
    )
    collect.set_defaults(handler=_collect)
    datasets = commands.add_parser(
        "datasets", help="list the EMT dataset ids and the --metadata each stands for"
    )
    datasets.set_defaults(handler=_datasets)


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    if not args.script or args.script in ("-h", "--help"):
        print(RUN_HELP)
        return 0 if args.script else 2
    from emtbench.integrations.vlm_eval.registration import run_script

    return run_script(args.script, extra)


def _collect(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.integrations.vlm_eval.scoring import collect_results, find_model_results

    wanted = [d for d in args.datasets.split(",") if d] if args.datasets else None
    files = find_model_results(args.results_dir, args.model_id, wanted)
    path = collect_results(files, args.output)
    print(f"{len(files)} dataset(s) -> {path}")
    return 0


def _datasets(args: argparse.Namespace, extra: list[str]) -> int:
    import json

    from emtbench.integrations.vlm_eval.variants import FAMILIES, standard_variants

    for dataset in FAMILIES.values():
        for variant in standard_variants(dataset):
            print(
                f"{variant.dataset_id:38s} {variant.dataset.task:18s} --metadata '{json.dumps(variant.metadata())}'"
            )
    return 0
