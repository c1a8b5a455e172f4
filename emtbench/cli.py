"""``emtbench`` command line: one sub-command per user-facing job.

Each concern folder contributes its sub-commands through a ``register(subparsers)`` function in its
own ``cli`` module, listed in :data:`SUBCOMMAND_MODULES`; heavy imports happen only when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from emtbench import __version__
from emtbench.errors import EmtbenchError

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "emtbench.tasks.cli",
    "emtbench.models.flagship.cli",
    "emtbench.judges.cli",
    "emtbench.models.cli",
    "emtbench.models.extract_cli",
    "emtbench.leaderboard.cli",
    "emtbench.methods.fusion.cli",
    "emtbench.methods.finetune_cli",
    "emtbench.demo.cli",
    "emtbench.integrations.vlm_eval.cli",
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
    try:
        return int(args.handler(args, extra) or 0)
    except EmtbenchError as error:
        print(f"emtbench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emtbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
