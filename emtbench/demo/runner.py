"""Running the demo: each stage's steps in order, skipping finished stages, and the whole run."""

from __future__ import annotations

import gc
import hashlib
import json
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.fsutil import staged_directory
from emtbench.demo.options import MARKER, DemoOptions
from emtbench.demo.plan import Stage, StageOutcome, Step, most_forgetting, plan, stage_key


@dataclass
class DemoResult:
    """A finished demo: its folder, report, leaderboard page, per-stage outcomes and the summary text."""

    out: Path
    report: Path
    page: Path
    outcomes: list[StageOutcome] = field(default_factory=list)
    text: str = ""


def run_step(step: Step, *, stage: str) -> Any:
    """Print the step's command, then make its API call; a failure names the stage and how to resume."""
    print(f"  $ emtbench {shlex.join(step.command)}", flush=True)
    try:
        return step.run()
    except EmtbenchError as error:
        import sys

        print(f"emtbench {step.command[0]}: error: {error}", file=sys.stderr)
        raise EmtbenchError(
            f"`emtbench {step.command[0]}` failed; its message is printed above",
            where=f"demo stage {stage}",
            fix="fix the cause and rerun the same `emtbench demo` command: finished stages are kept and skipped",
        ) from error
    finally:
        gc.collect()  # the step's model is garbage now; free it before the next stage loads one


def resolve_base_model(options: DemoOptions) -> tuple[Path, str, float]:
    """The pre-trained MLLM: --base-model, else `emtbench build-base` (cached, returns at once when built)."""
    start = time.perf_counter()
    if options.base_model is not None:
        return options.base_model.resolve(), "given with --base-model", 0.0
    from emtbench.methods.build_base import AlignmentOptions, build_base, cached_base_folder

    run_step(Step(["build-base"], AlignmentOptions(), build_base), stage="base-model")
    folder = cached_base_folder(AlignmentOptions())  # where `build-base` with no flags keeps its model
    if not (folder / "config.json").is_file():
        raise EmtbenchError(
            f"`emtbench build-base` finished but {folder} holds no model", where="demo stage base-model"
        )
    return folder.resolve(), "emtbench build-base", time.perf_counter() - start


def _losses(forgetting: dict[str, float] | None) -> str:
    return ", ".join(f"{name} {value:+.1f}" for name, value in (forgetting or {}).items()) + " points lost"


def _model_identity(model: Path) -> str:
    """Path and modification time of its config and weights: a rebuilt base model invalidates every stage."""
    parts = [str(model)]
    for name in sorted(p.name for p in model.glob("*") if p.suffix in (".json", ".safetensors")):
        parts.append(f"{name}:{(model / name).stat().st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def run_stages(
    options: DemoOptions, stages: list[Stage], base_identity: str, *, log: Callable[[str], None] = print
) -> list[StageOutcome]:
    """Run every stage not finished with the same key; each stage's folder appears only when it succeeds.

    Holds an exclusive lock on ``OUT/.demo.lock`` while it runs: a second demo in the same folder would
    take the first one's staging folders for leftovers of a killed run and delete them.
    """
    with _folder_lock(options.out):
        return _run_stages(options, stages, base_identity, log)


LOCK_FILE = ".demo.lock"


@contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise EmtbenchError(
                f"another `emtbench demo` is running in {out}",
                where="--out",
                fix="wait for it to finish (a rerun then resumes), or pass another --out",
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_stages(
    options: DemoOptions, stages: list[Stage], base_identity: str, log: Callable[[str], None]
) -> list[StageOutcome]:
    keys: dict[str, str] = {}
    outcomes: list[StageOutcome] = []
    _remove_killed_stages(options.out, stages, log)
    for index, stage in enumerate(stages, 1):
        key = keys[stage.name] = stage_key(stage, options.out, base_identity, keys)
        folder = options.out / stage.name
        header = f"[{index}/{len(stages)}] {stage.name}"
        previous = _read_marker(folder)
        if previous is not None and previous.get("key") == key:
            log(f"{header}: finished in an earlier run ({previous.get('seconds', 0):.0f} s), skipped")
            outcomes.append(
                StageOutcome(
                    stage.name, "skipped", float(previous.get("seconds", 0)), previous.get("summary", {})
                )
            )
            continue
        note = " (its options or inputs changed since it last ran: redoing it)" if previous else ""
        log(f"{header}: {stage.title}{note}")
        start = time.perf_counter()
        with staged_directory(folder) as here:
            if stage.prepare is not None:
                stage.prepare(here)
            for step in stage.steps(here):
                run_step(step, stage=stage.name)
            summary = stage.summarize(here) if stage.summarize else {}
            seconds = time.perf_counter() - start
            marker = {
                "stage": stage.name,
                "key": key,
                "seconds": round(seconds, 2),
                "commands": [["emtbench", *step.command] for step in stage.steps(folder)],
                "summary": summary,
            }
            (here / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        log(f"{header}: done in {seconds:.0f} s")
        outcomes.append(StageOutcome(stage.name, "ran", seconds, summary))
    return outcomes


def _remove_killed_stages(out: Path, stages: list[Stage], log: Callable[[str], None]) -> None:
    """A killed process (SIGKILL, power loss) cannot clean its staging folder; the next run does."""
    import shutil

    for stage in stages:
        for leftover in out.glob(f".{stage.name}.partial-*"):
            log(f"removing {leftover.name}, left by an interrupted run")
            shutil.rmtree(leftover, ignore_errors=True)


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def run_demo(options: DemoOptions | None = None, /, **values: Any) -> DemoResult:
    """Run (or resume) the whole forgetting experiment on the offline flagship; return its report.

    Example::

        from emtbench.demo import run_demo
        result = run_demo(out="emtbench-demo", quick=True)
        print(result.text)        # the table, the timings, the page's path

    Every step prints the ``emtbench`` command that does the same thing before it runs.
    """
    from emtbench.demo.preflight import check_requirements
    from emtbench.demo.report import collect_runs, render_table, render_timings, write_report

    if options is None:
        options = DemoOptions(**values)
    elif values:
        raise TypeError("give DemoOptions or its fields as keywords, not both")
    check_requirements(options)
    start = time.perf_counter()
    options.out.mkdir(parents=True, exist_ok=True)
    print(f"emtbench demo: {'quick' if options.quick else 'full'} run into {options.out}", flush=True)
    base_path, source, base_seconds = resolve_base_model(options)
    print(f"base model: {base_path} ({source}, {base_seconds:.0f} s)", flush=True)
    stages = plan(options, base_path)
    outcomes = run_stages(options, stages, _model_identity(base_path))
    site = options.out / "leaderboard" / "site"
    runs = collect_runs(options, outcomes, site)
    table = render_table(options, runs)
    fused, forgetting = most_forgetting(options) if options.fuses else (None, None)
    base = {"path": str(base_path), "source": source, "seconds": round(base_seconds, 1)}
    wall = time.perf_counter() - start
    report = write_report(
        options, outcomes, base, runs, table, wall, site, fused=fused, forgetting=forgetting
    )
    ran = [outcome for outcome in outcomes if outcome.status == "ran"]
    text = "\n".join(
        [
            "",
            table,
            "",
            *(
                [
                    f"Model Tailor and DARE ran on {fused} (the run that forgets most: {_losses(forgetting)})",
                    "",
                ]
                if fused
                else []
            ),
            "stage timings:",
            render_timings(outcomes, base),
            f"this run: {wall:.0f} s ({len(ran)} stage(s) run, {len(outcomes) - len(ran)} skipped)",
            "",
            f"leaderboard page: {site / 'index.html'}  (emtbench leaderboard serve {site})",
            f"report:           {report}",
        ]
    )
    return DemoResult(options.out, report, site / "index.html", outcomes, text)
