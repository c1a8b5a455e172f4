"""Evaluation data-parallel over 2 processes gives the results of 1 process (gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _eval(tmp_path: Path, name: str, model_dir: Path, *, processes: int) -> tuple[dict, dict[int, list], str]:
    """Run `emtbench eval` on 16 digits images; the results JSON, doc id -> responses, stdout."""
    output = tmp_path / name
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}  # fmt: skip
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
    ]
    model = "hf-multimodal-cpu-dp" if processes > 1 else "hf-multimodal"
    argv = [*launcher, str(ROOT / "tests" / "dp_eval_entry.py"), "eval", "--model", model,
            "--model_args", f"pretrained={model_dir}", "--tasks", "emt_digits", "--limit", "16",
            "--batch_size", "4", "--apply_chat_template", "--log_samples", "--output_path", str(output),
            "--metadata", '{"source": "offline"}']  # fmt: skip
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in output.rglob("results_*.json")]
    samples = [p for p in output.rglob("samples_emt_digits_*.jsonl")]
    assert len(results) == 1 and len(samples) == 1, sorted(str(p) for p in output.rglob("*"))  # rank 0 only
    responses = {}
    for line in samples[0].read_text().splitlines():
        row = json.loads(line)
        responses[row["doc_id"]] = row["resps"]
    return results[0], responses, done.stderr


@pytest.mark.slow
def test_two_process_data_parallel_eval_equals_one_process(tmp_path, tiny_llava_dir):
    single, single_responses, _ = _eval(tmp_path, "one", tiny_llava_dir, processes=1)
    double, double_responses, log = _eval(tmp_path, "two", tiny_llava_dir, processes=2)
    # rank 0 generated its half (lm-eval shards docs[rank::2]; only rank 0 shows progress), then gathered all 16
    assert "| 8/8 [" in log and "| 16/16 [" not in log
    assert sorted(single_responses) == sorted(double_responses) == list(range(16))
    assert double_responses == single_responses
    metrics = single["results"]["emt_digits"]
    assert {k: v for k, v in double["results"]["emt_digits"].items() if k != "alias"} == {
        k: v for k, v in metrics.items() if k != "alias"
    }
    assert single["n-samples"]["emt_digits"] == double["n-samples"]["emt_digits"]
    assert single["n-samples"]["emt_digits"]["effective"] == 16
