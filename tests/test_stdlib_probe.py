"""``emt_stdlib_ppl``: the offline language probe (perplexity on standard-library docstrings)."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import platform
from pathlib import Path

import pytest
from conftest import read_results

from emtbench.core.errors import EmtbenchError
from emtbench.tasks.linguistic import stdlib_probe


def test_documents_are_the_fixed_modules_in_order_with_version_and_digest():
    docs = stdlib_probe.stdlib_documents()
    assert [doc["module"] for doc in docs] == list(stdlib_probe.STDLIB_MODULES)
    assert len(set(stdlib_probe.STDLIB_MODULES)) == len(stdlib_probe.STDLIB_MODULES) == 20
    assert all(doc["text"].strip() for doc in docs)
    assert {doc["python_version"] for doc in docs} == {platform.python_version()}
    assert len({doc["corpus_sha256"] for doc in docs}) == 1
    assert docs == stdlib_probe.stdlib_documents()  # deterministic
    import json as json_module

    # The text is the source file's docstring, not __doc__ (which `python -OO` empties).
    assert docs[6]["module"] == "json" and docs[6]["text"] == json_module.__doc__.strip()


def test_process_results_counts_words_and_utf8_bytes():
    doc = {"text": "héllo  wörld\nagain"}
    scores = stdlib_probe.process_results(doc, [-7.5])
    assert scores["word_perplexity"] == (-7.5, 3)
    assert scores["byte_perplexity"] == scores["bits_per_byte"] == (-7.5, len(doc["text"].encode()))


def test_a_module_without_source_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec

    def fake(name, *args):
        spec = real(name, *args)
        if name == "heapq":  # a copy: find_spec returns the imported module's own __spec__
            spec = copy.copy(spec)
            spec.origin = "frozen"
        return spec

    monkeypatch.setattr(stdlib_probe.importlib.util, "find_spec", fake)
    with pytest.raises(EmtbenchError, match=r"heapq.*missing") as error:
        stdlib_probe.stdlib_documents()
    assert ".py files" in error.value.fix
    monkeypatch.undo()
    assert stdlib_probe.module_docstring("heapq")  # the real module is untouched


@pytest.mark.slow
def test_llm_and_mllm_give_the_same_finite_perplexity(
    tiny_llava_dir: Path, tiny_extracted_llm_dir: Path, tmp_path: Path
):
    """`hf` on the extracted LM and `hf-multimodal` on the MLLM (text-only fallback) measure one thing.

    Through :func:`emtbench.evaluate`, which indexes lm-eval's task files once for both runs."""
    from emtbench.tasks.evaluation import EvaluateOptions, evaluate

    values = {}
    for model, path in (("hf", tiny_extracted_llm_dir), ("hf-multimodal", tiny_llava_dir)):
        out = tmp_path / model
        result = evaluate(
            EvaluateOptions.from_argv([
                "--model", model, "--model_args", f"pretrained={path}", "--device", "cpu",
                "--tasks", "emt_stdlib_ppl", "--limit", "2", "--batch_size", "1",
                "--output_path", str(out), "--log_samples",
            ])
        )  # fmt: skip
        assert result.results_file is not None and result.results_file.is_file()
        results = read_results(out)
        metrics = results["results"]["emt_stdlib_ppl"]
        assert results["n-samples"]["emt_stdlib_ppl"]["effective"] == 2
        for name in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
            assert math.isfinite(metrics[f"{name},none"]) and metrics[f"{name},none"] > 0
        assert metrics["byte_perplexity,none"] > 1.0
        samples = [
            json.loads(line) for file in out.rglob("samples_emt_stdlib_ppl_*.jsonl") for line in file.open()
        ]
        assert [s["doc"]["module"] for s in samples] == list(stdlib_probe.STDLIB_MODULES[:2])
        assert samples[0]["doc"]["python_version"] == platform.python_version()
        values[model] = metrics["bits_per_byte,none"]
    assert values["hf"] == pytest.approx(values["hf-multimodal"], rel=1e-4)
