"""`emtbench extract-llm`: a standalone causal LM whose logits equal the MLLM's language model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_emtbench


def test_extracted_llm_has_identical_text_logits(tiny_llava_dir: Path, tiny_extracted_llm_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    mllm = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir).eval()
    llm = AutoModelForCausalLM.from_pretrained(tiny_extracted_llm_dir).eval()
    assert type(llm).__name__ == "LlamaForCausalLM"

    mllm_tokenizer = AutoProcessor.from_pretrained(tiny_llava_dir).tokenizer
    llm_tokenizer = AutoTokenizer.from_pretrained(tiny_extracted_llm_dir)
    texts = ["the quick brown fox jumps over the lazy dog", "What is the object in the image?"]
    batch = mllm_tokenizer(texts, return_tensors="pt", padding=True)
    assert torch.equal(
        llm_tokenizer(texts, return_tensors="pt", padding=True)["input_ids"], batch["input_ids"]
    )

    with torch.no_grad():
        expected = mllm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = llm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert got.shape == expected.shape
    assert torch.equal(got, expected)

    # the copy is a copy: every LM weight equals the MLLM's language model / head
    assert torch.equal(llm.lm_head.weight, mllm.lm_head.weight)
    assert torch.equal(llm.model.embed_tokens.weight, mllm.model.language_model.embed_tokens.weight)
    assert llm_tokenizer.chat_template  # carried over from the processor for --apply_chat_template


def test_run_record_names_the_source(tiny_llava_dir: Path, tiny_extracted_llm_dir: Path) -> None:
    record = json.loads((tiny_extracted_llm_dir / "emtbench_run.json").read_text())
    assert record["method"] == "extract-llm"
    assert record["base_model"] == str(tiny_llava_dir)
    assert record["architecture"] == "LlamaForCausalLM"
    assert record["parameters"]["language_model"] > 0


def test_refuses_a_non_empty_output_and_leaves_it_alone(tiny_llava_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run_emtbench("extract-llm", str(tiny_llava_dir), "--output", str(out)) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_bad_source_is_a_clear_error_without_output(tmp_path: Path, capsys) -> None:
    source = tmp_path / "not-a-model"
    source.mkdir()
    out = tmp_path / "llm"
    assert run_emtbench("extract-llm", str(source), "--output", str(out)) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "Fix:" in err
    assert not out.exists()
    assert not list(tmp_path.glob(".llm.partial-*"))


def test_help_teaches_with_an_example(capsys) -> None:
    with pytest.raises(SystemExit):
        run_emtbench("extract-llm", "--help")
    text = capsys.readouterr().out
    assert "emtbench extract-llm models/llava-ft --output models/llava-ft-llm" in text


def test_tied_embeddings_stay_tied_and_equal(tiny_llava_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, LlavaForConditionalGeneration

    from emtbench.models.extract import build_causal_lm

    config = AutoConfig.from_pretrained(tiny_llava_dir)
    config.text_config.tie_word_embeddings = True
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    mllm = LlavaForConditionalGeneration(config).eval()
    assert mllm.lm_head.weight is mllm.model.language_model.embed_tokens.weight

    llm = build_causal_lm(mllm)
    assert llm.config.tie_word_embeddings
    assert llm.lm_head.weight is llm.model.embed_tokens.weight
    ids = torch.tensor([[1, 5, 9, 22, 40, 7]])
    with torch.no_grad():
        assert torch.equal(llm(input_ids=ids).logits, mllm(input_ids=ids).logits)
