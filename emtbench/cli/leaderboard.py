"""``emtbench leaderboard build`` and ``emtbench leaderboard serve``."""

from __future__ import annotations

import argparse
from pathlib import Path

BUILD_HELP = """\
Build a static leaderboard from lm-eval results: SITE_DIR/index.html (one self-contained page,
sortable and filterable, with inline SVG plots), leaderboard.json and leaderboard.csv (same numbers).

The MANIFEST (YAML) lists the runs to compare; paths are relative to the manifest's folder:

  title: EMT forgetting on LLaVA-1.5
  groups: {EMT: [emt_mnist, emt_cifar10]}    # optional; defaults: EMT, NLU, NLG, VL
  runs:
    - name: llava-1.5-7b
      results: results/llava/                # lm-eval --output_path, or one results_*.json
      method: zero-shot                      # samples_*.jsonl next to it give 95% intervals
    - name: llava-lora-mnist
      results: results/lora-mnist/
      base: llava-1.5-7b                     # Δ and forgetting are measured against it
      method: lora
      target_tasks: [emt_mnist]              # original_tasks default to the others
      params_changed: 0.12                   # or run_record: ckpt/emtbench_run.json
      accuracy_matrix: ckpt/matrix.json      # continual runs: heatmap, BWT, forgetting
      url: https://huggingface.co/you/llava-lora-mnist

Every problem (missing or malformed results, a task missing from a run, an unknown base, two runs
with one name) is listed with its file and field; nothing is written unless --allow-partial.

Example:
  emtbench leaderboard build leaderboard.yaml --out site/ && emtbench leaderboard serve site/
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "leaderboard",
        help="build or serve the forgetting leaderboard page",
        description="Build a static forgetting leaderboard from lm-eval results, or serve one locally.",
        epilog="Example:\n  emtbench leaderboard build leaderboard.yaml --out site/\n  emtbench leaderboard serve site/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="leaderboard_command", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="MANIFEST -> SITE_DIR/index.html, leaderboard.json, leaderboard.csv",
        description=BUILD_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("manifest", metavar="MANIFEST", type=Path, help="run manifest (YAML)")
    build.add_argument(
        "--out", required=True, type=Path, metavar="SITE_DIR", help="folder to write the site into"
    )
    build.add_argument(
        "--allow-partial",
        action="store_true",
        help="write the site even when some runs or cells had problems (they are listed on the page)",
    )
    build.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true", help="hide progress bars"
    )
    build.set_defaults(handler=run_build)
    serve = actions.add_parser(
        "serve",
        help="serve a built SITE_DIR on localhost",
        description="Serve a built leaderboard folder over HTTP for a look.\n\nExample:\n"
        "  emtbench leaderboard serve site/ --port 8000   # then open http://127.0.0.1:8000/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "site_dir", metavar="SITE_DIR", type=Path, help="folder written by `leaderboard build`"
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)"
    )
    serve.set_defaults(handler=run_serve)


def run_build(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.leaderboard.site import OUTPUT_FILES, build_leaderboard

    site = build_leaderboard(
        args.manifest, args.out, allow_partial=args.allow_partial, progress=not args.no_progress
    )
    print(f"wrote {site.runs} runs × {site.tasks} tasks to {args.out}/ ({', '.join(OUTPUT_FILES)})")
    return 0


def run_serve(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.leaderboard.site import make_server

    server = make_server(args.site_dir, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving {args.site_dir} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    with server:
        server.serve_forever()
    return 0
