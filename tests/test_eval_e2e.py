"""End to end through lm-eval's real ``hf-multimodal`` model on a tiny random LLaVA loaded by path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_results, run_emtbench
from PIL import Image

from emtbench.judges.base import METRIC_NAMES

pytestmark = pytest.mark.slow


def _samples(output_path: Path, task: str) -> list[dict]:
    files = sorted(Path(output_path).rglob(f"samples_{task}_*.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def test_emtbench_eval_reports_accuracy_and_failure_rates(tiny_eval_results):
    results = read_results(tiny_eval_results)["results"]
    for task in ("emt_digits", "emt_fashion_mnist"):
        metrics = results[task]
        for name in METRIC_NAMES:
            assert 0.0 <= metrics[f"{name},none"] <= 1.0
        verdict_rates = sum(metrics[f"{n},none"] for n in METRIC_NAMES)
        assert verdict_rates == pytest.approx(1.0)  # every answer gets exactly one verdict
        samples = _samples(tiny_eval_results, task)
        assert len(samples) == 6  # --limit 6
        assert all(isinstance(s["resps"][0][0], str) for s in samples)
        assert np.mean([s["acc"] for s in samples]) == pytest.approx(metrics["acc,none"])


def test_prompt_reaches_the_model_through_the_chat_template(tiny_eval_results):
    sample = _samples(tiny_eval_results, "emt_digits")[0]
    prompt = sample["arguments"]["gen_args_0"]["arg_0"]
    assert prompt.startswith("USER: <image>\nWhat is the number in the image?")
    assert prompt.endswith("ASSISTANT:")
    assert sample["target"] in [str(d) for d in range(10)]


def test_plain_lm_eval_with_include_path(tiny_llava_dir, tmp_path, monkeypatch):
    from lm_eval.__main__ import cli_evaluate

    from emtbench.tasks import TASKS_DIR

    argv = [
        "lm_eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
        "--device", "cpu", "--include_path", str(TASKS_DIR), "--tasks", "emt_offline",
        "--limit", "2", "--batch_size", "2", "--output_path", str(tmp_path),
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    cli_evaluate()
    results = read_results(tmp_path)["results"]
    assert {"emt_offline", "emt_digits", "emt_fashion_mnist"} <= set(results)
    assert "acc,none" in results["emt_offline"]
    for task in ("emt_digits", "emt_fashion_mnist"):
        assert "extrinsic_hallucination,none" in results[task]


def test_local_image_folder_through_cifar10(tiny_llava_dir, tmp_path):
    data_dir = tmp_path / "cifar10-copy"
    rng = np.random.default_rng(0)
    for label in ("airplane", "cat", "truck"):
        (data_dir / label).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data_dir / label / f"{i}.png")
    out = tmp_path / "out"
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
        "--device", "cpu", "--tasks", "emt_cifar10", "--batch_size", "3", "--apply_chat_template",
        "--metadata", json.dumps({"data_dir": str(data_dir)}), "--output_path", str(out), "--log_samples",
    )  # fmt: skip
    assert code == 0
    assert read_results(out)["results"]["emt_cifar10"]["acc,none"] >= 0.0
    targets = sorted(s["target"] for s in _samples(out, "emt_cifar10"))
    assert targets == ["airplane", "airplane", "cat", "cat", "truck", "truck"]


def test_batched_answers_equal_unbatched(tiny_llava_dir, tmp_path):
    answers = {}
    for batch_size in ("1", "3"):
        out = tmp_path / f"bs{batch_size}"
        code = run_emtbench(
            "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
            "--device", "cpu", "--tasks", "emt_digits", "--limit", "6", "--batch_size", batch_size,
            "--apply_chat_template", "--output_path", str(out), "--log_samples",
        )  # fmt: skip
        assert code == 0
        answers[batch_size] = {s["doc_id"]: s["resps"][0][0] for s in _samples(out, "emt_digits")}
    assert answers["1"] == answers["3"]


def test_unknown_metadata_key_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", "pretrained=/does/not/exist",
        "--tasks", "emt_digits", "--metadata", '{"fracton": 0.2}', "--output_path", str(out),
    )  # fmt: skip
    assert code == 2
    assert "unknown metadata key(s) 'fracton'" in capsys.readouterr().err
    assert not out.exists()


def test_unreachable_hub_without_data_dir_writes_nothing(tiny_llava_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
        "--device", "cpu", "--tasks", "emt_cifar10", "--limit", "2", "--output_path", str(out),
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "uoft-cs/cifar10" in err and "data_dir" in err
    assert not out.exists() or not list(out.rglob("results_*.json"))


def test_the_checked_in_lm_eval_run_matches_a_fresh_one(tiny_eval_results):
    """tests/fixtures/lm_eval_run (what the fast tier reads) is what lm-eval writes today.

    If this fails after a deliberate change, regenerate it: python scripts/make_test_fixtures.py"""
    from conftest import LM_EVAL_RUN

    fresh = read_results(tiny_eval_results)
    stored = read_results(LM_EVAL_RUN)
    assert fresh["results"] == stored["results"]
    assert fresh["n-samples"] == stored["n-samples"]
    for task in ("emt_digits", "emt_fashion_mnist"):
        answers = [
            [
                json.loads(line)["filtered_resps"]
                for line in next(folder.rglob(f"samples_{task}_*.jsonl")).open()
            ]
            for folder in (tiny_eval_results, LM_EVAL_RUN)
        ]
        assert answers[0] == answers[1], task
