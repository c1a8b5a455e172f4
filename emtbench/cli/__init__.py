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
    return parser


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
    try:
        return int(args.handler(args, extra) or 0)
    except EmtbenchError as error:
        print(f"emtbench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emtbench {args.command}: interrupted", file=sys.stderr)
        return 130
