"""``emtbench push``: upload an existing model folder to the Hugging Face Hub."""

from __future__ import annotations

import argparse

PUSH_HELP = """\
Upload DIR to the Hub repo REPO_ID (created if needed). The token is checked first (HF_TOKEN, or
`hf auth login`); an emtbench folder's card is regenerated with REPO_ID as its title and validated
by the Hub before anything is uploaded. Re-running after a failure is safe: unchanged files are
skipped. --create-pr opens a pull request instead (for repos you cannot write to).

Example:
  emtbench push runs/ft me/llava-ft-mnist --private
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push", help="upload a model folder to the Hugging Face Hub",
        description=PUSH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("folder", metavar="DIR", help="model folder (save_pretrained or emtbench output)")
    parser.add_argument("repo_id", metavar="REPO_ID", help="Hub repo, OWNER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.set_defaults(handler=run_push)


def run_push(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.hub.push import push_folder

    url = push_folder(args.folder, args.repo_id, private=args.private, create_pr=args.create_pr)
    print(f"pushed {args.folder} to {url}")
    return 0
