"""Leaderboard build time and page size at community scale: 1,000 runs × 20 tasks (target: under 10 s
with paired bootstrap intervals from 200 per-sample lines per task).

Writes lm-eval-shaped results files into a temporary folder, then times `emtbench leaderboard build`
(in-process, the real CLI path: manifest, loading, metrics, HTML/JSON/CSV) side by side for 100 and
1,000 runs, with and without per-sample logs, and prints the ratios. ``--compare-with DIR`` also times
another checkout of emtbench (e.g. ``git archive main | tar -x -C DIR``) on the same files, in a
subprocess, right after this one, and prints the old/new ratio (a ratio holds on a loaded machine).

    python scripts/bench_leaderboard.py [--runs 1000] [--tasks 20] [--samples 200] [--compare-with DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emtbench.cli import main as emtbench_main
from emtbench.leaderboard.manifest import default_groups
from emtbench.testing.leaderboard import write_results

TARGET_SECONDS = 10.0
METHODS = ("lora", "linear", "soft", "msgm", "rehearsal", "model-tailor", "dare")


def make_manifest(folder: Path, runs: int, tasks: int, samples: int, seed: int = 0) -> Path:
    """``runs`` runs (one base per 20) over ``tasks`` tasks: the default groups' datasets, then extras."""
    rng = random.Random(seed)
    task_names = [task for datasets in default_groups().values() for task in datasets]
    task_names = (task_names + [f"extra_task_{i}" for i in range(tasks)])[:tasks]
    entries = []
    base_name = None
    for index in range(runs):
        accuracies = {task: rng.uniform(5, 95) for task in task_names}
        write_results(folder / f"run{index}", accuracies, samples=samples)
        entry = {"name": f"model-{index:04d}", "results": f"run{index}"}
        if index % 20 == 0:
            base_name = entry["name"]
            entry["method"] = "zero-shot"
        else:
            entry.update(
                base=base_name,
                method=METHODS[index % len(METHODS)],
                target_tasks=rng.sample(task_names, 2),
                params_changed=rng.choice([0.001, 0.01, 0.05, 0.1, 1.0]),
            )
            if index % 50 == 1:
                matrix_path = folder / f"run{index}" / "matrix.json"
                stages = task_names[:4]
                matrix_path.write_text(
                    json.dumps({"tasks": stages, "stages": stages,
                                "matrix": [[rng.uniform(5, 95) for _ in stages] for _ in stages]})
                )  # fmt: skip
                entry["accuracy_matrix"] = f"run{index}/matrix.json"
        entries.append(entry)
    path = folder / "manifest.json"  # JSON is YAML, and much faster to write for 1,000 entries
    path.write_text(json.dumps({"title": "bench", "runs": entries}))
    return path


OTHER_BUILD = """
import sys, time
from emtbench.cli import main
main(["leaderboard", "build", sys.argv[1], "--out", sys.argv[2] + "-warm", "--quiet"])  # imports, page cache
start = time.perf_counter()
code = main(["leaderboard", "build", sys.argv[1], "--out", sys.argv[2], "--quiet"])
print(time.perf_counter() - start if code == 0 else -1)
"""


def time_other(tree: Path, manifest: Path, out: Path) -> float:
    """Build time of another emtbench checkout on the same manifest (a subprocess with its PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", OTHER_BUILD, str(manifest), str(out)],
        env=env, capture_output=True, text=True, check=True, cwd=tree,
    )  # fmt: skip
    seconds = float(done.stdout.strip().splitlines()[-1])
    assert seconds >= 0, f"the other checkout's build failed: {done.stderr[-2000:]}"
    return seconds


def time_build(
    runs: int, tasks: int, samples: int, compare_with: Path | None = None
) -> tuple[float, int, float | None]:
    with tempfile.TemporaryDirectory(prefix="bench-leaderboard-") as tmp:
        folder = Path(tmp)
        manifest = make_manifest(folder, runs, tasks, samples)
        start = time.perf_counter()
        code = emtbench_main(
            ["leaderboard", "build", str(manifest), "--out", str(folder / "site"), "--quiet"]
        )
        seconds = time.perf_counter() - start
        assert code == 0, f"build failed with exit code {code}"
        other = time_other(compare_with, manifest, folder / "other-site") if compare_with else None
        return seconds, (folder / "site" / "index.html").stat().st_size, other


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--samples", type=int, default=200, help="per-sample lines per task for the CI case")
    parser.add_argument(
        "--compare-with", type=Path, default=None, help="another emtbench checkout to time on the same files"
    )
    args = parser.parse_args()
    time_build(5, 3, 0)  # warm-up: imports and first-call costs are not the build's
    cases = [
        (f"{args.runs // 10} runs x {args.tasks} tasks", args.runs // 10, 0),
        (f"{args.runs} runs x {args.tasks} tasks", args.runs, 0),
        (
            f"{args.runs} runs x {args.tasks} tasks + {args.samples} samples/task (bootstrap CIs)",
            args.runs,
            args.samples,
        ),
    ]
    measured = []
    for label, runs, samples in cases:
        seconds, size, other = time_build(runs, args.tasks, samples, args.compare_with)
        measured.append(seconds)
        line = f"{label:<70} {seconds:7.2f} s   index.html {size / 1e6:6.2f} MB"
        if other is not None:
            line += f"   other checkout {other:7.2f} s (other / this {other / seconds:.2f}x)"
        print(line, flush=True)
    print(f"ratio {args.runs} / {args.runs // 10} runs: {measured[1] / measured[0]:.1f}x")
    print(f"ratio with / without bootstrap CIs: {measured[2] / measured[1]:.2f}x")
    print(f"target: {args.runs} runs x {args.tasks} tasks with intervals under {TARGET_SECONDS:.0f} s -> "
          f"{measured[2]:.2f} s ({measured[2] / TARGET_SECONDS:.2f} of the budget): "
          f"{'met' if measured[2] < TARGET_SECONDS else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
