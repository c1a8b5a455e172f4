"""Zero-shot CLIP baseline: a tiny random CLIPModel saved to disk and run through `emtbench eval`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import read_results, run_emtbench
from PIL import Image

from emtbench.core.errors import EmtbenchError
from emtbench.datasets.emt import get_dataset
from emtbench.models.clip import CLIPZeroShot, class_prompts, request_dataset


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from emtbench.testing import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


def test_templates_follow_the_paper():
    assert class_prompts(get_dataset("digits"))[3] == 'a photo of the number: "3".'
    cifar100 = class_prompts(get_dataset("cifar100"))
    assert cifar100[1] == "a photo of a aquarium fish."
    assert len(cifar100) == 100


def test_labels_come_from_the_request_document_not_the_prompt():
    request = SimpleNamespace(
        doc={"emt_task": "emt_fashion_mnist", "label": 0}, task_name="emt_fashion_mnist"
    )
    assert request_dataset(request).labels[0] == "T-shirt/top"
    with pytest.raises(EmtbenchError, match="only classifies EMT tasks"):
        request_dataset(SimpleNamespace(doc={"question": "?"}, task_name="gsm8k"))


def test_label_embeddings_are_computed_once_per_task(tiny_clip_dir):
    model = CLIPZeroShot(pretrained=str(tiny_clip_dir), batch_size=2)
    texts_encoded: list[int] = []
    encode_texts = model.encoder.encode_texts
    model.encoder.encode_texts = lambda texts: texts_encoded.append(len(texts)) or encode_texts(texts)
    image = Image.new("L", (8, 8), color=200)
    requests = [
        SimpleNamespace(
            doc={"emt_task": "emt_digits", "label": 1},
            task_name="emt_digits",
            args=("", {}, {"visual": [image]}),
        )
        for _ in range(5)
    ]
    answers = model.generate_until(requests, disable_tqdm=True)
    answers += model.generate_until(requests[:1], disable_tqdm=True)
    assert texts_encoded == [10]  # ten digit prompts, once, for two calls and three image batches
    assert set(answers) <= set(get_dataset("digits").labels)


@pytest.mark.slow
def test_emt_eval_with_a_tiny_clip_by_path(tiny_clip_dir, tmp_path):
    out = tmp_path / "out"
    code = run_emtbench(
        "eval", "--model", "emtbench-clip", "--model_args", f"pretrained={tiny_clip_dir}",
        "--tasks", "emt_digits,emt_fashion_mnist", "--limit", "8", "--batch_size", "4",
        "--output_path", str(out), "--log_samples",
    )  # fmt: skip
    assert code == 0
    results = read_results(out)["results"]
    for task in ("emt_digits", "emt_fashion_mnist"):
        metrics = results[task]
        # CLIP always names exactly one label of the task, so every answer is right or wrong.
        assert metrics["acc,none"] + metrics["wrong,none"] == pytest.approx(1.0)
        assert metrics["extrinsic_hallucination,none"] == 0 and metrics["intrinsic_hallucination,none"] == 0
        [samples_file] = out.rglob(f"samples_{task}_*.jsonl")
        labels = set(get_dataset(task).labels)
        answers = [json.loads(line)["resps"][0][0] for line in samples_file.read_text().splitlines()]
        assert len(answers) == 8 and set(answers) <= labels


def test_unknown_backend_is_a_clear_error(tiny_clip_dir):
    with pytest.raises(EmtbenchError, match="unknown CLIP backend"):
        CLIPZeroShot(pretrained=str(tiny_clip_dir), backend="tensorflow")
