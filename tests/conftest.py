"""Shared fixtures: tiny random models saved to disk and loaded back by path, never from a hub."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests never reach a model hub: fail fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Caches (judge verdicts, encoded datasets) go to a fresh folder: a test never sees an earlier run's.
if "EMTBENCH_CACHE_DIR" not in os.environ:
    os.environ["EMTBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="emtbench-test-cache-")
    atexit.register(shutil.rmtree, os.environ["EMTBENCH_CACHE_DIR"], True)


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    from emtbench.testing import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


def run_emtbench(*argv: str) -> int:
    """Run the ``emtbench`` CLI in-process (a subprocess would pay lm-eval's import time again)."""
    from emtbench.cli import main

    return main(list(argv))


def read_results(output_path: Path) -> dict:
    """The single lm-eval results JSON written under ``output_path``."""
    files = sorted(Path(output_path).rglob("results_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


LM_EVAL_RUN = Path(__file__).resolve().parent / "fixtures" / "lm_eval_run"
"""A real `emtbench eval` run of the tiny LLaVA (the arguments of ``tiny_eval_results``), checked in;
regenerate with ``python scripts/make_test_fixtures.py``."""


@pytest.fixture
def lm_eval_run(tmp_path) -> Path:
    """A copy of the checked-in lm-eval output (results + samples), for tests that only read it."""
    copy = tmp_path / "lm-eval-run"
    shutil.copytree(LM_EVAL_RUN, copy)
    return copy


@pytest.fixture(scope="session")
def tiny_eval_results(tiny_llava_dir, tmp_path_factory) -> Path:
    """One real `emtbench eval` run of the tiny LLaVA on the offline tasks, with logged samples."""
    out = tmp_path_factory.mktemp("eval-results")
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
        "--device", "cpu", "--tasks", "emt_digits,emt_fashion_mnist", "--limit", "6",
        "--batch_size", "3", "--apply_chat_template", "--output_path", str(out), "--log_samples",
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="session")
def tiny_extracted_llm_dir(tiny_llava_dir, tmp_path_factory) -> Path:
    """The tiny LLaVA's language model written by `emtbench extract-llm` (a standalone causal LM)."""
    out = tmp_path_factory.mktemp("extracted") / "tiny-llm"
    assert run_emtbench("extract-llm", str(tiny_llava_dir), "--output", str(out)) == 0
    return out


@pytest.fixture(scope="session")
def tiny_finetuned_llava_dir(tiny_llava_dir, tmp_path_factory) -> Path:
    """The tiny LLaVA after 12 steps of `emtbench finetune --method full` on emt:digits."""
    out = tmp_path_factory.mktemp("models") / "tiny-llava-ft"
    code = run_emtbench(
        "finetune", "--model", str(tiny_llava_dir), "--method", "full", "--data", "emt:digits",
        "--max-steps", "12", "--lr", "5e-3", "--batch-size", "8", "--output", str(out),
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture
def fake_hub(tmp_path):
    """A :class:`emtbench.testing.fake_hub.FakeHub` on 127.0.0.1 with huggingface_hub pointed at it.

    ``HF_ENDPOINT`` / ``huggingface_hub.constants.ENDPOINT`` are the fake's, ``HF_TOKEN`` is its valid
    token (``fake_hub.token``, user ``fake_hub.user``; a second user's token is ``OTHER_TOKEN``),
    ``HF_HUB_OFFLINE=0`` and ``HF_HOME`` is ``tmp_path / "hf-home"``. All restored afterwards.
    """
    from emtbench.testing.fake_hub import FakeHub, use_fake_hub

    with FakeHub(root=tmp_path / "fake-hub-store") as hub, use_fake_hub(hub, home=tmp_path / "hf-home"):
        yield hub
