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
    - name: someone-else
      results: hf://datasets/board/results/you__model/2026-01-01/   # Hub files work too
      run_record: hf://you/model                                    # = its emtbench_run.json

Every problem (missing or malformed results, a task missing from a run, an unknown base, two runs
with one name) is listed with its file and field; nothing is written unless --allow-partial.

Example:
  emtbench leaderboard build leaderboard.yaml --out site/ && emtbench leaderboard serve site/
"""


PUBLISH_HELP = """\
Upload a leaderboard folder written by `emtbench leaderboard build` as a static Hugging Face Space
(SDK `static`: the Hub serves its index.html). The Space is created if needed; its README front
matter says `sdk: static`. The token (HF_TOKEN, or `hf auth login`) is checked first.

Example:
  emtbench leaderboard build leaderboard.yaml --out site/
  emtbench leaderboard publish site/ --repo-id you/emt-leaderboard
"""

WORKER_HELP = """\
The leaderboard's backend, as the Open LLM Leaderboard runs one: for each PENDING request in the
requests dataset (filed by `emtbench submit --model`), mark it RUNNING, download the checkpoint and
its base at the requested commits (weights, configs and tokenizer files only: no code, no pickles;
never trust_remote_code), validate them like local folders, run the requested tasks (default
emt_offline) with `emtbench.evaluate`, upload results and samples to the results dataset, add the run
to its leaderboard.yaml (hf:// entries), and mark the request FINISHED, or FAILED with the error.

The token must be able to write to both datasets.

Example:
  emtbench leaderboard worker --requests board/requests --results board/results --once
  emtbench leaderboard build hf://datasets/board/results/leaderboard.yaml --out site/
"""


def manifest_arg(value: str) -> Path | str:
    """A local manifest as a Path; an ``hf://`` one as it is (a Path would fold its ``//``)."""
    return value if value.startswith("hf://") else Path(value)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "leaderboard",
        help="build, serve or publish the forgetting leaderboard; run its Hub worker",
        description="Build a static forgetting leaderboard from lm-eval results, serve it locally, publish it "
        "as a Hub Space, or run the worker that evaluates submitted models.",
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
    build.add_argument(
        "manifest",
        metavar="MANIFEST",
        type=manifest_arg,
        help="run manifest (YAML): a path, or hf://datasets/USER/NAME/FILE",
    )
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
    publish = actions.add_parser(
        "publish",
        help="upload a built SITE_DIR as a static Hugging Face Space",
        description=PUBLISH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument(
        "site_dir", metavar="SITE_DIR", type=Path, help="folder written by `leaderboard build`"
    )
    publish.add_argument(
        "--repo-id", required=True, metavar="USER/SPACE", help="the Space to create or update"
    )
    publish.add_argument("--private", action="store_true", help="create the Space private")
    publish.set_defaults(handler=run_publish)
    worker = actions.add_parser(
        "worker",
        help="evaluate the PENDING requests of a requests dataset into a results dataset",
        description=WORKER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("--requests", required=True, metavar="USER/REQUESTS", help="requests dataset")
    worker.add_argument("--results", required=True, metavar="USER/RESULTS", help="results dataset")
    worker.add_argument("--once", action="store_true", help="handle what is pending now, then exit")
    worker.add_argument("--interval", type=float, default=60.0, help="seconds between polls (default 60)")
    worker.add_argument("--limit", type=float, default=None, help="lm-eval --limit (documents per task)")
    worker.add_argument("--device", default=None, help="lm-eval --device (e.g. cuda:0, cpu)")
    worker.add_argument("--batch-size", default="1", help="lm-eval --batch_size (default 1)")
    worker.set_defaults(handler=run_worker)


def run_build(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.leaderboard.site import OUTPUT_FILES, build_leaderboard

    site = build_leaderboard(
        args.manifest, args.out, allow_partial=args.allow_partial, progress=not args.no_progress
    )
    print(f"wrote {site.runs} runs × {site.tasks} tasks to {args.out}/ ({', '.join(OUTPUT_FILES)})")
    return 0


def run_publish(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.leaderboard.publish import publish_leaderboard

    published = publish_leaderboard(args.site_dir, args.repo_id, private=args.private)
    print(f"published {', '.join(published.files)} to {published.url}")
    return 0


def run_worker(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.leaderboard.worker import WorkerOptions, run_worker

    options = WorkerOptions(
        requests=args.requests,
        results=args.results,
        once=args.once,
        interval=args.interval,
        limit=args.limit,
        device=args.device,
        batch_size=args.batch_size,
    )
    done = run_worker(options)
    for processed in done:
        line = f"{processed.status:<8} {processed.model}"
        line += f" -> {processed.results_path}" if processed.results_path else f": {processed.error}"
        print(line)
    if not done:
        print(f"no PENDING requests in {args.requests}")
    return 1 if any(p.status == "FAILED" for p in done) else 0


def run_serve(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.leaderboard.site import make_server

    server = make_server(args.site_dir, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving {args.site_dir} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    with server:
        server.serve_forever()
    return 0
