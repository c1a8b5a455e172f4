"""A real `emtbench eval` (lm-eval, tiny LLaVA) against a judge endpoint that fails on some answers.

The issue: one malformed reply killed the eval and lost every answer; judge errors counted against
``acc``; a password in ``judge_base_url`` was written into ``results_*.json``.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from bad_input import expect_handled, run_cli
from openai_server import FAULTS, OpenAIServer

pytestmark = pytest.mark.slow

PASSWORD = "hunter2-judge-PASSWORD"


def _fails(body: dict) -> bool:
    prompt = body["messages"][-1]["content"]
    return hashlib.sha256(prompt.encode()).digest()[0] % 2 == 0


def test_eval_survives_a_faulty_judge_and_reports_coverage(tiny_llava_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    out = tmp_path / "out"
    with OpenAIServer() as server:
        replies = iter(FAULTS * 100)
        server.responder = lambda body: next(replies) if _fails(body) else "yes"
        host = server.base_url.split("//", 1)[1]
        metadata = {
            "judge": "llm",
            "judge_base_url": f"http://judge:{PASSWORD}@{host}",
            "judge_max_attempts": 2,
            "judge_backoff": 0,
            "judge_timeout": 2,
            "judge_cache": "none",
        }

        def case() -> bool:
            code, stderr = run_cli(
                "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
                "--device", "cpu", "--tasks", "emt_digits", "--limit", "8", "--batch_size", "4",
                "--apply_chat_template", "--output_path", str(out), "--log_samples",
                "--metadata", json.dumps(metadata),
            )  # fmt: skip
            assert code == 0, stderr
            [results_file] = out.rglob("results_*.json")
            metrics = json.loads(results_file.read_text())["results"]["emt_digits"]
            [samples_file] = out.rglob("samples_emt_digits_*.jsonl")
            samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
            judged = [s for s in samples if s["judge_coverage"] == 1.0]
            unjudged = [s for s in samples if s["judge_coverage"] == 0.0]
            assert len(samples) == 8 and judged and unjudged, "the server should fail on some answers only"
            assert all("acc" not in s and s["judge_error"] == 1.0 for s in unjudged)
            assert metrics["judge_coverage,none"] == pytest.approx(len(judged) / 8)
            assert metrics["acc,none"] == pytest.approx(sum(s["acc"] for s in judged) / len(judged))
            return True

        expect_handled("judge replies", "eval with a judge failing on half the answers", case)


def test_a_password_in_the_judge_url_never_reaches_results_files(tiny_llava_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    out = tmp_path / "out"
    with OpenAIServer(default="yes") as server:
        host = server.base_url.split("//", 1)[1]
        metadata = {
            "judge": "llm",
            "judge_base_url": f"http://judge:{PASSWORD}@{host}",
            "judge_cache": "none",
        }

        def case() -> bool:
            code, stderr = run_cli(
                "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
                "--device", "cpu", "--tasks", "emt_digits", "--limit", "2", "--batch_size", "2",
                "--output_path", str(out), "--log_samples", "--metadata", json.dumps(metadata),
            )  # fmt: skip
            assert code == 0, stderr
            [results_file] = out.rglob("results_*.json")
            written = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
            return (
                len(server.requests) > 0
                and PASSWORD not in written
                and PASSWORD not in stderr
                and f"http://***@{host}" in results_file.read_text()  # the URL is recorded, redacted
            )

        expect_handled("secrets", "password in judge_base_url: results and samples files", case)
