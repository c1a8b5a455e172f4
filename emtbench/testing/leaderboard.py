"""Write lm-eval-shaped results and samples files, for tests, the benchmark and trying the page out.

The files have the same layout lm-eval writes (``results_<date>.json`` with ``"acc,none"`` values in
[0, 1], ``samples_<task>_<date>.jsonl`` with one ``acc`` per line), so they go through the real loader.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

STAMP = "2026-01-01T00-00-00.000000"


def write_results(
    folder: str | Path,
    accuracies: Mapping[str, float],
    *,
    model_name: str = "crafted",
    samples: int = 0,
    stamp: str = STAMP,
) -> Path:
    """Write a results file (accuracies given in %), plus ``samples`` per-sample lines per task if > 0.

    Samples hold exactly round(acc% · n / 100) correct answers, so they agree with the results file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for task, percent in accuracies.items():
        value = percent / 100.0
        if samples:
            correct = round(value * samples)
            value = correct / samples
            lines = [
                json.dumps(
                    {"doc_id": i, "filter": "none", "metrics": ["acc"], "acc": 1.0 if i < correct else 0.0}
                )
                for i in range(samples)
            ]
            (folder / f"samples_{task}_{stamp}.jsonl").write_text("\n".join(lines) + "\n")
        results[task] = {"alias": task, "acc,none": value, "acc_stderr,none": 0.0}
    payload = {
        "results": results,
        "group_subtasks": {},
        "config": {"model": model_name},
        "lm_eval_version": "0.4.13",
    }
    path = folder / f"results_{stamp}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path


BASE_ACCURACY = {
    "emt_digits": 80.0,
    "emt_fashion_mnist": 60.0,
    "arc_easy": 60.0,
    "arc_challenge": 30.0,
    "winogrande": 50.0,
    "wsc273": 60.0,
    "lambada_openai": 40.0,
}
INJECTED_NAME = "<script>alert(1)</script>"


def write_demo_manifest(folder: str | Path, *, extra_runs: list[dict] | None = None) -> Path:
    """A small leaderboard with a base, fine-tuned runs, a continual run and a hostile model name."""
    folder = Path(folder)
    write_results(folder / "base", BASE_ACCURACY, samples=50)
    write_results(
        folder / "lora",
        BASE_ACCURACY | {"emt_digits": 95.0, "arc_challenge": 20.0, "lambada_openai": 30.0},
        samples=50,
    )
    write_results(folder / "hostile", BASE_ACCURACY | {"emt_digits": 90.0, "emt_fashion_mnist": 40.0})
    write_results(
        folder / "seq", BASE_ACCURACY | {"emt_digits": 85.0, "emt_fashion_mnist": 70.0, "winogrande": 55.0}
    )
    (folder / "lora-ckpt").mkdir(exist_ok=True)
    (folder / "lora-ckpt" / "emtbench_run.json").write_text(
        json.dumps({"method": "lora", "parameters": {"changed_fraction": 0.05}})
    )
    (folder / "seq-matrix.json").write_text(
        json.dumps(
            {
                "tasks": ["emt_digits", "emt_fashion_mnist"],
                "stages": ["emt_digits", "emt_fashion_mnist"],
                "matrix": [[92.0, 35.0], [85.0, 70.0]],
            }
        )
    )
    runs = [
        {"name": "base-7b", "results": "base", "method": "zero-shot", "url": "https://example.org/base-7b"},
        {
            "name": "lora-digits",
            "results": "lora",
            "base": "base-7b",
            "method": "lora",
            "target_tasks": ["emt_digits"],
            "run_record": "lora-ckpt/emtbench_run.json",
        },
        {
            "name": INJECTED_NAME,
            "results": "hostile",
            "base": "base-7b",
            "method": "dare",
            "target_tasks": ["emt_digits"],
            "params_changed": 0.1,
            "notes": "a model name that tries to run a script",
        },
        {
            "name": "seq-msgm",
            "results": "seq",
            "base": "base-7b",
            "method": "msgm",
            "target_tasks": ["emt_digits", "emt_fashion_mnist"],
            "params_changed": 0.002,
            "accuracy_matrix": "seq-matrix.json",
        },
        *(extra_runs or []),
    ]
    manifest = {
        "title": "emtbench demo leaderboard",
        "groups": {"EMT": ["emt_digits", "emt_fashion_mnist"]},
        "bootstrap": {"resamples": 200},
        "runs": runs,
    }
    path = folder / "leaderboard.yaml"
    path.write_text(json.dumps(manifest, indent=1))  # JSON is valid YAML
    return path
