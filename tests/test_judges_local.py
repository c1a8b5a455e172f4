"""The local transformers LLM judge (offline path of the llm judge) with a tiny random Llama."""

from __future__ import annotations

import pytest

from emtbench.core.errors import EmtbenchError
from emtbench.datasets.emt import CIFAR10_LABELS
from emtbench.judges import JudgeItem, LocalLLMJudge, Verdict, make_judge


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from emtbench.testing import build_tiny_tokenizer

    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_local_judge_is_deterministic_batched_and_cached(tiny_llama_dir, tmp_path):
    items = [JudgeItem(answer, "cat", CIFAR10_LABELS) for answer in ("cat", "dog", "a cat", "cat", " ")]
    options = {"judge": "local_llm", "judge_model": str(tiny_llama_dir), "judge_batch_size": 2}
    first = make_judge({**options, "judge_cache": str(tmp_path / "c.sqlite")})
    assert isinstance(first, LocalLLMJudge)
    verdicts = first.judge(items)
    assert first.calls == 3  # the repeated answer and the empty one cost nothing
    assert verdicts[4].verdict is Verdict.EMPTY and verdicts[0] == verdicts[3]
    assert Verdict.JUDGE_ERROR not in {v.verdict for v in verdicts}
    uncached = make_judge({**options, "judge_cache": "none"})
    assert uncached.judge(items) == verdicts  # greedy decoding: the same verdicts every time
    rerun = make_judge({**options, "judge_cache": str(tmp_path / "c.sqlite")})
    assert rerun.judge(items) == verdicts and rerun.calls == 0


def test_missing_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(EmtbenchError, match="judge_model"):
        make_judge({"judge": "local_llm", "judge_model": str(tmp_path / "nope")})
