"""emtbench's merges against mergekit's, on the same SmolLM2-135M checkpoints, side by side in one run.

Both sides run as the user would run them, each in its own child process: ``mergekit-yaml CONFIG OUT``
and ``emtbench merge --method M ...``. For each method the script reports wall time and peak memory
(the child's maximum resident set size, from ``os.wait4``), and compares the merged weights:

* task arithmetic and TIES are deterministic: the largest absolute difference, and how many entries
  differ. For TIES every differing entry is checked for a *tie at the trim threshold* (several
  entries of one task vector with the same |δ| as the k-th largest, so "the top k" is not unique:
  emtbench keeps the lowest positions, mergekit whatever its unstable sort leaves first).
* DARE is random (different generators on the two sides), so its statistics are compared: the share
  of δ entries kept, whether the merged task vector is unbiased (its projection on Σδ), and its
  relative error against Σδ, next to what theory says for drop rate p.

The checkpoints: the offline SmolLM2-135M-Instruct (``load_smollm2()``) and two fine-tuned copies
made by a seeded perturbation of every decoder-layer parameter, δ = scale·std(W)·N(0, 1). Why not a
few training steps: merges are elementwise per tensor, so their speed and their agreement depend on
the shapes and the density of δ, not on how δ arose; a perturbation is dense like a full fine-tune,
reproducible to the bit, and costs no training on a shared CPU. Two fine-tuned copies (not one)
make TIES elect signs between disagreeing task vectors.

Option mapping (mergekit 0.1.5 definitions, ``mergekit/merge_methods/generalized_task_arithmetic.py``
and ``mergekit/sparsify.py``):

  emtbench task-arithmetic --weight 1        mergekit task_arithmetic, weight 1 per model (normalize off)
  emtbench ties --density d                  mergekit ties, weight 1 and density d per model,
                                             normalize on (= the disjoint mean: Σ agreeing / count)
  emtbench dare --drop-rate p --seed s       mergekit dare_linear, density 1 − p, weight 1 per model,
                                             rescale on, --random-seed s

Known differences in definition, not bugs on either side: TIES trims round(d·n) entries
(mergekit: floor(d·n), at least 1) and breaks magnitude ties by position; when Σ of the trimmed
vectors is exactly 0 emtbench elects no sign (mergekit elects +). DARE survivors are rescaled by
1/(1 − p) in emtbench (Yu et al. 2024, eq. 2) but by ‖δ‖₁/‖mask ⊙ δ‖₁ per tensor in mergekit, which
equals 1/(1 − p) only in expectation.

Run (mergekit in its own virtualenv; it must not replace torch, see the README's Performance notes).
Install the CPU torch first, then mergekit under a constraint that pins it, so that pip never swaps
in a CUDA build (nvidia-* wheels in its plan mean the pin is not holding):

  python3 -m venv /tmp/mk && echo "torch==2.13.0+cpu" > /tmp/mk/torch.txt
  /tmp/mk/bin/pip install -c /tmp/mk/torch.txt torch==2.13.0+cpu   # --index-url https://download.pytorch.org/whl/cpu where no local wheel
  /tmp/mk/bin/pip install -c /tmp/mk/torch.txt mergekit
  OMP_NUM_THREADS=1 python scripts/bench_mergekit.py --mergekit-yaml /tmp/mk/bin/mergekit-yaml
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

METHODS = ("task-arithmetic", "ties", "dare")
MERGEKIT_NAMES = {"task-arithmetic": "task_arithmetic", "ties": "ties", "dare": "dare_linear"}


# ----------------------------------------------------------------------------- checkpoints


def make_checkpoints(work: Path, scale: float, copies: int) -> tuple[Path, list[Path]]:
    """The offline SmolLM2 and ``copies`` perturbed copies of it, saved once (reused on later runs)."""
    from emtbench.models.flagship.assemble import load_smollm2

    base, finetuned = work / "base", [work / f"finetuned-{seed}" for seed in range(1, copies + 1)]
    stamp = work / "checkpoints.json"
    recipe = {"scale": scale, "copies": copies, "torch": torch.__version__}
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return base, finetuned
    model, tokenizer = load_smollm2()
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    pretrained = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    for seed, folder in enumerate(finetuned, start=1):
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                parameter.copy_(pretrained[name])
                if ".layers." in name:
                    noise = torch.randn(parameter.shape, generator=generator)
                    parameter.add_(scale * pretrained[name].std() * noise)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    stamp.write_text(json.dumps(recipe))
    return base, finetuned


# ----------------------------------------------------------------------------- the two sides


def mergekit_config(method: str, base: Path, finetuned: list[Path], density: float, drop_rate: float) -> str:
    parameters = {"weight": 1.0}
    if method == "ties":
        parameters["density"] = density
    if method == "dare":
        parameters["density"] = 1.0 - drop_rate
    lines = [f"merge_method: {MERGEKIT_NAMES[method]}", f"base_model: {base}", "models:"]
    for folder in finetuned:
        lines += [f"  - model: {folder}", f"    parameters: {json.dumps(parameters)}"]
    if method == "ties":
        lines.append("parameters: {normalize: true}")
    if method == "dare":
        lines.append("parameters: {rescale: true, normalize: false}")
    lines.append("dtype: float32")
    return "\n".join(lines) + "\n"


def side_command(side: str, method: str, args, base: Path, finetuned: list[Path], out: Path) -> list[str]:
    if side == "mergekit":
        config = out.parent / f"{out.name}.yml"
        config.write_text(mergekit_config(method, base, finetuned, args.density, args.drop_rate))
        seed, threads = str(args.seed), str(torch.get_num_threads())
        return [args.mergekit_yaml, str(config), str(out), "--random-seed", seed, "--num-threads", threads]
    command = [sys.executable, "-m", "emtbench.cli", "merge", "--method", method, "--pretrained", str(base)]
    for folder in finetuned:
        command += ["--finetuned", str(folder)]
    if method == "ties":
        command += ["--density", str(args.density)]
    if method == "dare":
        command += ["--drop-rate", str(args.drop_rate)]
    return [*command, "--weight", "1", "--seed", str(args.seed), "--output", str(out), "--no-progress"]


PEAK_RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""
"""Runs a command and writes its peak RSS (KiB). Why a wrapper: Linux keeps a process's high-water
mark across exec, so a child forked straight from this script (which holds the checkpoints it
compares) would report this script's memory; forked from a bare interpreter it reports its own."""


def run_child(command: list[str], log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process, which must succeed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    peak = log.with_suffix(".rss")
    with log.open("w") as handle:
        start = time.perf_counter()
        code = subprocess.call(
            [sys.executable, "-c", PEAK_RSS_WRAPPER, str(peak), *command],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
        elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{command[0]} failed ({code}); its output is in {log}")
    return elapsed, int(peak.read_text()) / 1024  # ru_maxrss is KiB on Linux


# ----------------------------------------------------------------------------- comparing the results


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(file))
    return weights


def trim_threshold(delta: torch.Tensor, density: float) -> torch.Tensor:
    count = max(1, math.floor(density * delta.numel()))
    return torch.kthvalue(delta.abs().flatten(), delta.numel() - count + 1).values


def compare_deterministic(method, mine, theirs, pretrained, finetuned, density) -> str:
    worst, differing, explained, unelected = 0.0, 0, 0, 0
    for name, value in mine.items():
        other = theirs[name]
        different = value != other
        count = int(different.sum())
        if not count:
            continue
        differing += count
        worst = max(worst, (value.double() - other.double()).abs().max().item())
        if method == "ties":
            ties = torch.zeros_like(different)
            kept_sum = torch.zeros_like(value, dtype=torch.float64)
            kept_any = torch.zeros_like(different)
            for state in finetuned:
                delta = state[name] - pretrained[name]
                threshold = trim_threshold(delta, density)
                ties |= delta.abs() == threshold
                kept = delta.abs() >= threshold
                kept_sum += torch.where(kept, delta.double(), 0.0)
                kept_any |= kept
            zero_sum = kept_any & (kept_sum == 0) & ~ties
            explained += int((different & ties).sum())
            unelected += int((different & zero_sum).sum())
    total = sum(t.numel() for t in mine.values())
    line = f"max |emtbench − mergekit| = {worst:.3g}, {differing:,} of {total:,} entries differ"
    if method == "ties" and differing:
        line += (
            f": {explained:,} tie in |δ| at the trim threshold, {unelected:,} have trimmed Σδ exactly 0 "
            f"(no sign elected), {differing - explained - unelected:,} unexplained"
        )
    return line


def dare_statistics(merged, pretrained, finetuned, drop_rate) -> dict[str, float]:
    """Share of entries left pre-trained, projection of the merged δ on Σδ, relative error."""
    unchanged = total = 0
    dot = norm_sum = error = norm_each = 0.0
    for name, value in merged.items():
        deltas = [state[name].double() - pretrained[name].double() for state in finetuned]
        if not any(bool(d.any()) for d in deltas):
            continue
        target = sum(deltas)
        got = value.double() - pretrained[name].double()
        unchanged += int((got == 0).sum())
        total += got.numel()
        dot += float((got * target).sum())
        norm_sum += float((target * target).sum())
        error += float(((got - target) ** 2).sum())
        norm_each += sum(float((d * d).sum()) for d in deltas)
    expected_error = math.sqrt(drop_rate / (1 - drop_rate) * norm_each / norm_sum)
    return {
        "unchanged": unchanged / total,
        "expected_unchanged": drop_rate ** len(finetuned),
        "projection": dot / norm_sum,
        "relative_error": math.sqrt(error / norm_sum),
        "expected_relative_error": expected_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mergekit-yaml", default=shutil.which("mergekit-yaml"), help="mergekit's entry point"
    )
    parser.add_argument("--work", type=Path, default=Path("bench-mergekit"), help="checkpoints and outputs")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs per side and method (the best is reported)"
    )
    parser.add_argument("--density", type=float, default=0.2, help="TIES density (default 0.2)")
    parser.add_argument("--drop-rate", type=float, default=0.9, help="DARE drop rate p (default 0.9)")
    parser.add_argument("--scale", type=float, default=0.01, help="δ = scale·std(W)·N(0, 1) (default 0.01)")
    parser.add_argument("--finetuned-copies", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="DARE seed, both sides")
    args = parser.parse_args()
    if not args.mergekit_yaml or not Path(args.mergekit_yaml).exists():
        raise SystemExit("mergekit-yaml not found: install mergekit in its own venv and pass --mergekit-yaml")
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; use {', '.join(METHODS)}")

    version = subprocess.run(
        [str(Path(args.mergekit_yaml).with_name("python")), "-c", "import importlib.metadata as m; print(m.version('mergekit'))"],
        capture_output=True, text=True,
    ).stdout.strip() or "?"  # fmt: skip
    print(f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"{os.cpu_count()} CPUs, mergekit {version}, {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    args.work.mkdir(parents=True, exist_ok=True)
    base, finetuned = make_checkpoints(args.work, args.scale, args.finetuned_copies)
    pretrained = load_weights(base)
    finetuned_weights = [load_weights(folder) for folder in finetuned]

    timings: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for round_index in range(args.rounds):
        for method_index, method in enumerate(methods):
            # alternate which side goes first, so neither always gets the warmer page cache
            sides = (
                ("mergekit", "emtbench")
                if (round_index + method_index) % 2 == 0
                else ("emtbench", "mergekit")
            )
            outputs = {}
            for side in sides:
                out = args.work / f"out-{side}-{method}"
                shutil.rmtree(out, ignore_errors=True)
                command = side_command(side, method, args, base, finetuned, out)
                seconds, rss = run_child(command, args.work / f"{side}-{method}.log")
                timings.setdefault((method, side), []).append((seconds, rss))
                print(
                    f"round {round_index + 1} {method:>15} {side:>8}: {seconds:6.1f} s, peak RSS {rss:7.0f} MiB"
                )
                outputs[side] = out
            if round_index == 0:
                mine, theirs = load_weights(outputs["emtbench"]), load_weights(outputs["mergekit"])
                missing = sorted(set(mine) ^ set(theirs))
                if missing:
                    print(f"  tensors only on one side: {missing[:5]}")
                if method == "dare":
                    for side, merged in (("emtbench", mine), ("mergekit", theirs)):
                        stats = dare_statistics(merged, pretrained, finetuned_weights, args.drop_rate)
                        timings.setdefault(("dare-stats", side), []).append(tuple(stats.values()))
                        print(f"  {side:>8}: {stats['unchanged']:.4f} of δ entries left pre-trained "
                              f"(expected p^{len(finetuned)} = {stats['expected_unchanged']:.4f}), "
                              f"projection on Σδ {stats['projection']:.4f} (unbiased: 1), relative error "
                              f"{stats['relative_error']:.3f} (expected {stats['expected_relative_error']:.3f})")  # fmt: skip
                else:
                    line = compare_deterministic(
                        method, mine, theirs, pretrained, finetuned_weights, args.density
                    )
                    print(f"  {line}")
                del mine, theirs
            for out in outputs.values():
                shutil.rmtree(out, ignore_errors=True)

    print(
        "\nmethod            mergekit s   emtbench s   speed-up   mergekit MiB   emtbench MiB   memory ratio"
    )
    for method in methods:
        (mk_s, mk_rss), (em_s, em_rss) = (
            tuple(min(values) for values in zip(*timings[(method, side)], strict=True))
            for side in ("mergekit", "emtbench")
        )
        print(f"{method:<16} {mk_s:11.1f} {em_s:12.1f} {mk_s / em_s:9.2f}x {mk_rss:14.0f} {em_rss:14.0f} "
              f"{em_rss / mk_rss:13.2f}")  # fmt: skip
    print(
        "speed-up = mergekit time / emtbench time (>= 1: emtbench at least as fast); "
        "memory ratio = emtbench / mergekit peak RSS (<= 1: no more memory); best of each side's rounds"
    )


if __name__ == "__main__":
    main()
