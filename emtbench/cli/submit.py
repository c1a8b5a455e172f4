"""``emtbench submit``: send a run's results to a Hub leaderboard, or ask it to evaluate a Hub model."""

from __future__ import annotations

import argparse
from pathlib import Path

SUBMIT_HELP = """\
Two ways to get onto a Hub leaderboard:

  emtbench submit RESULTS_DIR --to USER/RESULTS [--base NAME] [--run-record FILE]
      Open a pull request adding a run's lm-eval results_*.json, its samples_*.jsonl and the model's
      emtbench_run.json (found beside the results or in the evaluated model folder) under
      MODEL/STAMP/ in the results dataset. The files are checked first with the leaderboard's own
      readers (a malformed file, or samples of another run, is refused before any upload).

  emtbench submit --model HUB_ID --to USER/REQUESTS [--base HUB_ID] [--tasks emt_offline]
      File an evaluation request (model, commit, base, tasks, status PENDING) in a requests dataset,
      committed if the token may write there, else as a pull request. The base defaults to the one
      the checkpoint records (its emtbench_run.json or card). The leaderboard's worker
      (`emtbench leaderboard worker`) evaluates it.

The token comes from HF_TOKEN or `hf auth login` and is checked before anything is uploaded.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="submit results (a pull request) or an evaluation request to a Hub leaderboard",
        description=SUBMIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "results_dir", metavar="RESULTS_DIR", type=Path, nargs="?", help="an `emtbench eval --output_path`"
    )
    parser.add_argument("--to", required=True, metavar="USER/DATASET", help="results or requests dataset")
    parser.add_argument("--model", metavar="HUB_ID", help="request an evaluation of this Hub checkpoint")
    parser.add_argument("--revision", help="with --model: branch, tag or commit (default main)")
    parser.add_argument(
        "--tasks", default="emt_offline", help="with --model: comma-separated tasks (default emt_offline)"
    )
    parser.add_argument("--base", help="the base model (a Hub id with --model; a run name with RESULTS_DIR)")
    parser.add_argument("--name", help="with RESULTS_DIR: the run's name (default: the evaluated model's)")
    parser.add_argument("--run-record", type=Path, help="with RESULTS_DIR: the model's emtbench_run.json")
    parser.set_defaults(handler=run_submit)


def run_submit(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.core.errors import EmtbenchError

    if (args.results_dir is None) == (args.model is None):
        raise EmtbenchError("give either RESULTS_DIR or --model HUB_ID", fix="see `emtbench submit --help`")
    if args.model is not None:
        from emtbench.leaderboard.submissions import submit_request

        filed = submit_request(
            args.model, args.to, base=args.base, revision=args.revision, tasks=args.tasks.split(",")
        )
        how = f"as pull request {filed.pr_url}" if filed.pr_url else filed.commit_url
        base = filed.request["base"] or "none recorded"
        print(f"filed {filed.path_in_repo} (PENDING, base {base}) in {filed.repo_id}: {how}")
        return 0
    from emtbench.leaderboard.submissions import submit_results

    pr = submit_results(args.results_dir, args.to, name=args.name, run_record=args.run_record, base=args.base)
    for note in pr.notes:
        print(f"note: {note}")
    print(f"opened pull request {pr.pr_url} adding {len(pr.files)} files under {pr.path_in_repo}/")
    return 0
