"""VL tasks: TRI-ML's slim selection on original-format files, and a real lm-eval run on the tiny LLaVA."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest
from conftest import read_results, run_emtbench
from PIL import Image

from emtbench.core.errors import EmtbenchError
from emtbench.tasks.vl.data import load_vl_dataset, shuffled_order
from emtbench.tasks.vl.scoring import gqa_exact_match, parse_box, vqa_soft_accuracy
from emtbench.tasks.vl.utils import doc_to_image, doc_to_text, process_results


def _image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color=(seed * 37 % 256, seed * 91 % 256, seed * 13 % 256)).save(
        path, format="JPEG"
    )


def write_vqav2(root: Path, question_ids: list[int], *, images: bool = True) -> None:
    """VQAv2's two official files; the annotation file lists the questions in a different order."""
    root.mkdir(parents=True, exist_ok=True)
    questions = [
        {"question_id": q, "image_id": q % 7, "question": f"How many things in {q}?"} for q in question_ids
    ]
    annotations = [
        {
            "question_id": q,
            "image_id": q % 7,
            "question_type": "how many",
            "answer_type": "number",
            "multiple_choice_answer": "2",
            "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(["2"] * 4 + ["3"] * 6)],
        }
        for q in question_ids
    ]
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(
        json.dumps({"questions": questions[::-1]})
    )
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    (root / "val2014").mkdir(exist_ok=True)
    if images:
        for image_id in range(7):
            _image(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", image_id)


def write_gqa(root: Path, count: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    questions = {
        str(20_000_000 + i): {
            "imageId": f"n{i % 3}",
            "question": f"Is it left {i}?",
            "answer": "yes" if i % 2 else "no",
        }
        for i in range(count)
    }
    (root / "testdev_balanced_questions.json").write_text(json.dumps(questions))
    for i in range(3):
        _image(root / "images" / f"n{i}.jpg", i)


def write_textvqa(root: Path, count: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    data = [
        {
            "question_id": 34_000 + i,
            "image_id": f"img{i % 2}",
            "question": "what brand?",
            "answers": ["Pepsi"] * 10,
        }
        for i in range(count)
    ]
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    for i in range(2):
        _image(root / "train_images" / f"img{i}.jpg", i)


def write_refcoco(root: Path, refs_per_subset: int, *, images: bool = True) -> None:
    """The REFER toolkit's files: refs(unc|umd).p pickles and instances.json per sub-dataset."""
    for offset, (folder, split_by) in enumerate(
        (("refcoco", "unc"), ("refcoco+", "unc"), ("refcocog", "umd"))
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        refs, annotations = [], []
        for i in range(refs_per_subset):
            ref_id = offset * 100_000 + i
            refs.append(
                {
                    "ref_id": ref_id,
                    "ann_id": ref_id,
                    "image_id": i % 4,
                    "split": "val" if i % 5 else "train",
                    "sentences": [{"sent": f"thing {i} {s}", "sent_id": 10 * ref_id + s} for s in range(2)],
                }
            )
            annotations.append({"id": ref_id, "image_id": i % 4, "bbox": [4.0, 3.0, 20.0, 15.0]})
        with (root / folder / f"refs({split_by}).p").open("wb") as handle:
            pickle.dump(refs, handle)
        image_list = [{"id": i, "width": 40, "height": 30} for i in range(4)]
        (root / folder / "instances.json").write_text(
            json.dumps({"images": image_list, "annotations": annotations})
        )
    (root / "train2014").mkdir(exist_ok=True)
    if images:
        for i in range(4):
            _image(root / "train2014" / f"COCO_train2014_{i:012d}.jpg", i)


def test_slim_vqav2_equals_the_reference_procedure(tmp_path: Path) -> None:
    question_ids = random.Random(5).sample(range(10_000_000), 5000)
    write_vqav2(tmp_path, question_ids)
    data = load_vl_dataset("vqav2", slim=True, data_dir=str(tmp_path))

    expected = list(
        question_ids
    )  # docs/design.md §6: annotation-file order, shuffled with Random(21), first 1024
    random.Random(21).shuffle(expected)
    assert data["question_id"] == [str(q) for q in expected[:1024]]
    assert data[0]["answers"] == ["2"] * 4 + ["3"] * 6

    full = load_vl_dataset("vqav2", slim=False, data_dir=str(tmp_path))
    assert full["question_id"] == [str(q) for q in expected]


def test_slim_refcoco_takes_1024_of_each_subset_in_shuffled_order(tmp_path: Path) -> None:
    write_refcoco(tmp_path / "download" / "refcoco", refs_per_subset=800)
    data = load_vl_dataset("refcoco", slim=True, data_dir=str(tmp_path))

    # The reference: one example per val sentence, RefCOCO then RefCOCO+ then RefCOCOg, in refs order.
    examples = []
    for subset, offset in (("RefCOCO", 0), ("RefCOCO+", 1), ("RefCOCOg", 2)):
        for i in range(800):
            if i % 5:
                ref_id = offset * 100_000 + i
                examples += [(subset, f"{subset}-{ref_id}-{10 * ref_id + s}") for s in range(2)]
    assert len(examples) == 3 * 1280
    random.Random(21).shuffle(examples)
    expected, counts = [], {}
    for subset, example_id in examples:
        if counts.get(subset, 0) < 1024:
            expected.append(example_id)
            counts[subset] = counts.get(subset, 0) + 1
    assert data["question_id"] == expected
    assert {s: data["subset"].count(s) for s in counts} == {
        "RefCOCO": 1024,
        "RefCOCO+": 1024,
        "RefCOCOg": 1024,
    }
    assert data[0]["bbox_xywh"] == [4.0, 3.0, 20.0, 15.0] and data[0]["image_size"] == [40, 30]


def test_shuffled_order_depends_only_on_length() -> None:
    ids = ["b", "a", "c", "e", "d"]
    shuffled = list(ids)
    random.Random(21).shuffle(shuffled)
    assert [ids[i] for i in shuffled_order(len(ids))] == shuffled


def test_documents_prompt_image_and_scores(tmp_path: Path) -> None:
    write_refcoco(tmp_path, refs_per_subset=5)
    doc = load_vl_dataset("refcoco", slim=True, data_dir=str(tmp_path))[0]
    assert doc_to_text(doc).startswith(
        "<image>Please provide the bounding box coordinate of the region this sentence"
    )
    assert doc_to_image(doc)[0].size == (40, 30)
    # reference box: [4, 3, 24, 18] px on a 40x30 image -> [0.1, 0.1, 0.6, 0.6]
    scores = process_results(doc, ["[0.1, 0.1, 0.6, 0.6]"])
    key = "acc_" + doc["subset"].lower().replace("+", "_plus")
    assert scores["acc"] == 1.0 and scores[key] == 1.0 and scores["unparseable"] == 0.0

    write_gqa(tmp_path / "gqa", 4)
    gqa_doc = load_vl_dataset("gqa", slim=True, data_dir=str(tmp_path))[0]
    assert (
        doc_to_text(gqa_doc)
        == f"<image>{gqa_doc['question']}\nAnswer the question using a single word or phrase."
    )
    assert process_results(gqa_doc, [gqa_doc["answers"][0].upper() + "."]) == {"acc": 1.0}


def test_missing_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmtbenchError, match=r"(?s)no textvqa files .*TextVQA_0\.5\.1_val\.json"):
        load_vl_dataset("textvqa", slim=True, data_dir=str(tmp_path))
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [{"question": "no id"}]}))
    (tmp_path / "train_images").mkdir()
    with pytest.raises(EmtbenchError, match="not in the original format"):
        load_vl_dataset("textvqa", slim=True, data_dir=str(tmp_path))


@pytest.fixture(scope="session")
def vl_data_dir(tmp_path_factory) -> Path:
    """One folder holding all four datasets, laid out as TRI-ML's download/ folder."""
    root = tmp_path_factory.mktemp("vl-data")
    write_vqav2(root / "download" / "vqa-v2", list(range(100, 112)))
    write_gqa(root / "download" / "gqa", 12)
    write_textvqa(root / "download" / "text-vqa", 12)
    write_refcoco(root / "download" / "refcoco", refs_per_subset=4)
    return root


def _samples(out: Path, task: str) -> list[dict]:
    files = sorted(out.rglob(f"samples_{task}_*.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


@pytest.mark.slow
def test_eval_vl_suite_end_to_end(tiny_llava_dir: Path, vl_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
        "--device", "cpu", "--tasks", "emt_vl", "--limit", "2", "--batch_size", "8",
        "--apply_chat_template", "--output_path", str(out), "--log_samples",
        "--metadata", json.dumps({"data_dir": str(vl_data_dir)}),
    )  # fmt: skip
    assert code == 0
    report = read_results(out)
    results = report["results"]
    for task in ("emt_vqav2_slim", "emt_gqa_slim", "emt_textvqa_slim", "emt_refcoco_slim"):
        assert 0.0 <= results[task]["acc,none"] <= 1.0
        assert report["configs"][task]["generation_kwargs"]["max_gen_toks"] == 128
        assert report["configs"][task]["generation_kwargs"]["do_sample"] is False
    assert "emt_vl" in results and 0.0 <= results["emt_vl"]["acc,none"] <= 1.0

    # the leaderboard reads the VL group's tasks (accuracy in %) from this file
    from emtbench.leaderboard.manifest import default_groups
    from emtbench.leaderboard.results import read_results as leaderboard_results

    board = leaderboard_results(out, {})
    for task in default_groups()["VL"]:
        assert board.metric[task] == "acc,none"
        assert board.accuracy[task] == pytest.approx(100 * results[task]["acc,none"])

    # every logged score is the reference scoring of the logged answer
    for sample in _samples(out, "emt_vqav2_slim"):
        answer = sample["filtered_resps"][0]
        assert sample["acc"] == pytest.approx(vqa_soft_accuracy(answer, sample["doc"]["answers"]))
        assert (
            sample["arguments"]["gen_args_0"]["arg_0"].count(
                "Answer the question using a single word or phrase."
            )
            == 1
        )
    for sample in _samples(out, "emt_gqa_slim"):
        assert sample["acc"] == gqa_exact_match(sample["filtered_resps"][0], sample["doc"]["answers"][0])
    refcoco = _samples(out, "emt_refcoco_slim")
    for sample in refcoco:
        assert sample["unparseable"] == float(parse_box(sample["filtered_resps"][0]) is None)
    unparseable = sum(s["unparseable"] for s in refcoco) / len(refcoco)
    assert results["emt_refcoco_slim"]["unparseable,none"] == pytest.approx(unparseable)


def _fake_hub(monkeypatch) -> list[tuple]:
    """Stand-ins for the lmms-lab Hub tables (their column layout), served by datasets.load_dataset."""
    import datasets

    def image(seed: int, size=(40, 30)):
        return Image.new("RGB", size, color=(seed * 50 % 256, 0, 0))

    tables = {
        ("lmms-lab/VQAv2", None, "validation"): {
            "question_id": [7, 8, 9],
            "question": ["q7", "q8", "q9"],
            "answers": [[{"answer": "yes", "answer_confidence": "yes", "answer_id": i} for i in range(10)]]
            * 3,
            "image": [image(1), image(2), image(3)],
        },
        ("lmms-lab/GQA", "testdev_balanced_instructions", "testdev"): {
            "id": ["201", "202"],
            "imageId": ["n2", "n1"],
            "question": ["left?", "right?"],
            "answer": ["yes", "no"],
        },
        ("lmms-lab/GQA", "testdev_balanced_images", "testdev"): {
            "id": ["n1", "n2"],
            "image": [image(1, (10, 10)), image(2, (20, 20))],
        },
        **{
            (repo, None, "val"): {
                "question_id": ["1", "2"],
                "answer": [["left dog", "dog on left"], ["red car"]],
                "bbox": [[4.0, 3.0, 20.0, 15.0]] * 2,
                "image": [image(4), image(5)],
            }
            for repo in ("lmms-lab/RefCOCO", "lmms-lab/RefCOCOplus", "lmms-lab/RefCOCOg")
        },
    }
    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict(tables[(path, name, split)]).cast_column("image", datasets.Image())

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr("emtbench.datasets.loading.hub_reachable", lambda: True)
    return calls


def test_hub_copies_are_read_with_their_own_columns(monkeypatch) -> None:
    calls = _fake_hub(monkeypatch)

    vqa = load_vl_dataset("vqav2", slim=True)
    assert sorted(vqa["question_id"]) == ["7", "8", "9"]
    assert vqa[0]["answers"] == ["yes"] * 10
    assert process_results(vqa[0], ["Yes."]) == {"acc": 1.0}

    gqa = load_vl_dataset("gqa", slim=True)
    by_id = {doc["question_id"]: doc for doc in gqa}
    assert doc_to_image(by_id["201"])[0].size == (20, 20)  # joined on imageId, not on row order
    assert doc_to_image(by_id["202"])[0].size == (10, 10)

    refcoco = load_vl_dataset("refcoco", slim=True)
    assert len(refcoco) == 9  # one example per referring sentence, three sources
    assert sorted(set(refcoco["subset"])) == ["RefCOCO", "RefCOCO+", "RefCOCOg"]
    doc = refcoco[0]
    assert doc["image_size"] == [0, 0]  # unknown: taken from the image at scoring time
    assert process_results(doc, ["[0.1, 0.1, 0.6, 0.6]"])["acc"] == 1.0
    assert ("lmms-lab/RefCOCOg", None, "val") in calls


def test_unreachable_hub_is_a_clear_error() -> None:
    # conftest sets HF_HUB_OFFLINE=1
    with pytest.raises(EmtbenchError, match=r"(?s)lmms-lab/VQAv2.*data_dir"):
        load_vl_dataset("vqav2", slim=True)
