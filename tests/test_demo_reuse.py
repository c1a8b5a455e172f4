"""The demo's language probe is computed once per set of language-model weights (emtbench.demo.reuse)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from emtbench.testing import build_tiny_flagship

    return build_tiny_flagship(tmp_path_factory.mktemp("models") / "tiny-flagship")


def _save_variant(source: Path, target: Path, *, dtype, edit=None) -> Path:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
    if edit is not None:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(target)
    AutoProcessor.from_pretrained(source).save_pretrained(target)
    return target


def _projector(model) -> None:
    model.model.multi_modal_projector.linear_1.weight.add_(1.0)


def _decoder(model) -> None:
    model.model.language_model.layers[0].mlp.down_proj.weight.add_(1e-3)


def test_fingerprint_reads_the_language_model_only(tiny, tmp_path):
    from emtbench.demo.reuse import language_fingerprint

    options = {"tasks": ["emt_stdlib_ppl"], "limit": 5}
    base = _save_variant(tiny, tmp_path / "bf16", dtype=torch.bfloat16)
    upcast = _save_variant(base, tmp_path / "fp32", dtype=torch.float32)
    projector = _save_variant(base, tmp_path / "projector", dtype=torch.float32, edit=_projector)
    decoder = _save_variant(base, tmp_path / "decoder", dtype=torch.float32, edit=_decoder)
    key = language_fingerprint(base, options)
    assert language_fingerprint(upcast, options) == key  # same values in another dtype
    assert language_fingerprint(projector, options) == key  # text never reaches the projector
    assert language_fingerprint(decoder, options) != key
    assert language_fingerprint(base, {**options, "limit": 6}) != key  # another evaluation
    tokenizer = json.loads((upcast / "tokenizer.json").read_text())
    tokenizer["padding"] = {"strategy": "BatchLongest", "direction": "Right", "pad_id": 0}  # a collator's
    (upcast / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert language_fingerprint(upcast, options) == key
    tokenizer["added_tokens"] = tokenizer["added_tokens"][:-1]
    (upcast / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert language_fingerprint(upcast, options) != key


def test_a_finished_stage_with_the_same_weights_is_copied_not_recomputed(tiny, tmp_path, monkeypatch):
    from emtbench.demo.options import MARKER
    from emtbench.demo.reuse import evaluate_language_once, reused_from
    from emtbench.tasks import evaluation
    from emtbench.tasks.evaluation import EvaluateOptions

    base = _save_variant(tiny, tmp_path / "base", dtype=torch.bfloat16)
    linear = _save_variant(base, tmp_path / "linear", dtype=torch.float32, edit=_projector)
    lora = _save_variant(base, tmp_path / "lora", dtype=torch.float32, edit=_decoder)
    computed = []

    def fake_evaluate(options):  # stands in for lm-eval: writes a results file, records the call
        computed.append(options.model_args["pretrained"])
        Path(options.output_path).mkdir(parents=True)
        (Path(options.output_path) / "results_1.json").write_text(json.dumps({"model": computed[-1]}))

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    out = tmp_path / "demo"

    def stage(name: str, model: Path) -> Path:
        options = EvaluateOptions(
            tasks=["emt_stdlib_ppl"], model="hf-multimodal", model_args={"pretrained": str(model)},
            limit=5, output_path=out / name / "language",
        )  # fmt: skip
        evaluate_language_once(options, out, log=lambda _: None)
        (out / name / MARKER).write_text("{}")
        return out / name / "language"

    stage("eval-base", base)
    copied = stage("eval-linear", linear)
    stage("eval-lora", lora)
    assert computed == [str(base), str(lora)]
    assert json.loads((copied / "results_1.json").read_text())["model"] == str(base)
    assert reused_from(copied) == "eval-base" and reused_from(out / "eval-lora" / "language") is None
    for name in ("eval-base", "eval-linear"):
        (out / name / MARKER).unlink()  # an unfinished stage is never a source
    stage("eval-linear-again", linear)
    assert computed[-1] == str(linear)
