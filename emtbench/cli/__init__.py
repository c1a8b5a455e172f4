"""``emtbench`` command line: one sub-command per user-facing job.

Each module of this package adds its sub-commands through a ``register(subparsers)`` function and is
listed in :data:`SUBCOMMAND_MODULES`; heavy imports happen only when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from emtbench.core.errors import EmtbenchError
from emtbench.core.version import __version__

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "emtbench.cli.eval",
    "emtbench.cli.build_base",
    "emtbench.cli.judge_agreement",
    "emtbench.cli.convert",
    "emtbench.cli.extract_llm",
    "emtbench.cli.leaderboard",
    "emtbench.cli.fusion",
    "emtbench.cli.finetune",
    "emtbench.cli.demo",
    "emtbench.cli.vlm_eval",
    "emtbench.cli.card",
    "emtbench.cli.push",
    "emtbench.cli.submit",
)

DESCRIPTION = """\
emtbench measures what fine-tuning a multimodal LLM made it forget.

Typical loop:
  emtbench eval --model hf-multimodal --model_args pretrained=llava-hf/llava-1.5-7b-hf \\
      --tasks emt --apply_chat_template --batch_size 8 --output_path results/
  (fine-tune, then evaluate the checkpoint the same way and compare)

Run `emtbench COMMAND --help` for each command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emtbench", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"emtbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    add_no_progress(subparsers)
    return parser


NO_PROGRESS = "--no-progress"
"""The one switch that silences every progress bar of a command (:mod:`emtbench.core.progress`)."""


def add_no_progress(subparsers: argparse._SubParsersAction) -> None:
    """Give every command (and sub-action) ``--no-progress``, unless it declares the flag itself."""
    for parser in dict.fromkeys(subparsers.choices.values()):
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in nested:
            add_no_progress(action)
        if nested or NO_PROGRESS in parser._option_string_actions:
            continue
        parser.add_argument(NO_PROGRESS, dest="no_progress", action="store_true", help="hide progress bars")


def progress_off(args: argparse.Namespace) -> bool:
    """Whether the command line asked for ``--no-progress`` (commands with their own ``progress`` option too)."""
    return bool(getattr(args, "no_progress", False)) or getattr(args, "progress", True) is False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 2
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from emtbench.hub.cards import record_invocation

    record_invocation(argv)  # the exact command, for the model card of what it writes
    from emtbench.core.progress import progress_silenced

    try:
        with progress_silenced(progress_off(args)):
            return int(args.handler(args, extra) or 0)
    except EmtbenchError as error:
        print(f"emtbench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emtbench {args.command}: interrupted", file=sys.stderr)
        return 130
