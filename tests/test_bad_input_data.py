"""Bad data folders: crafted pickles, broken images, parquet files and label columns, annotations.

Downloaded data is untrusted: nothing in it may run, and whatever is wrong with it is a named error
before any model is loaded (never an IndexError mid-run, never an answer judged against a wrong label).
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import pytest
from bad_input import expect_refusal
from PIL import Image
from test_vl_tasks import write_gqa, write_refcoco, write_textvqa, write_vqav2

from emtbench.tasks.runtime import load_task_dataset
from emtbench.tasks.vl.data import load_vl_dataset

AREA_EMT = "data folders (EMT)"
AREA_VL = "data folders (VL annotations)"


class RunsCode:
    """Pickles to a call of os.system: what a crafted refs(unc).p holds."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def _png(size=(32, 32), color=(10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png() -> bytes:
    """A few kB of PNG that declares 20000×20000 pixels (over PIL's limit)."""
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    return buffer.getvalue()


def _load_emt(root: Path, task: str = "cifar10", **metadata):
    return lambda: load_task_dataset(task, data_dir=str(root), **metadata)


# --- EMT: image folders ---------------------------------------------------------------------


def _folder(root: Path, classes=("cat", "dog"), per_class: int = 2) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(_png(color=(i * 40, 0, 0)))
    return root


IMAGE_FILES = {
    "decompression bomb png": _bomb_png,
    "0-byte png": lambda: b"",
    "text named .png": lambda: b"this is not a png",
    "truncated png": lambda: _png((64, 64))[:60],
    "html named .jpg": lambda: b"<html>403 Forbidden</html>",
}


@pytest.mark.parametrize("kind", IMAGE_FILES)
def test_bad_image_files_in_a_class_folder(tmp_path, kind):
    root = _folder(tmp_path / "data")
    suffix = ".jpg" if "jpg" in kind else ".png"
    (root / "cat" / f"bad{suffix}").write_bytes(IMAGE_FILES[kind]())
    expect_refusal(AREA_EMT, f"image folder: {kind}", _load_emt(root), match="bad")


def test_an_empty_class_folder_tree(tmp_path):
    (tmp_path / "cat").mkdir()
    expect_refusal(AREA_EMT, "image folder: no images", _load_emt(tmp_path))


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    expect_refusal(AREA_EMT, "data_dir is a file", _load_emt(tmp_path / "file"))


# --- EMT: parquet files ---------------------------------------------------------------------


def _parquet(
    root: Path, labels, images=None, *, class_label: bool = False, name="test-00000-of-00001.parquet"
):
    import datasets

    from emtbench.datasets.emt import get_dataset

    root.mkdir(parents=True, exist_ok=True)
    images = images if images is not None else [_png(color=(i, 0, 0)) for i in range(len(labels))]
    label_feature = (
        datasets.ClassLabel(names=list(get_dataset("cifar10").labels))
        if class_label
        else datasets.Value("int64")
    )
    features = datasets.Features({"img": datasets.Image(), "label": label_feature})
    table = datasets.Dataset.from_dict(
        {"img": [{"bytes": b, "path": None} for b in images], "label": labels}, features=features
    )
    table.to_parquet(root / name)
    return root


@pytest.mark.parametrize(
    ("case", "labels"),
    [("label -1", [0, -1, 2]), ("label 42", [0, 42, 2]), ("label 10 of 10 classes", [10, 1, 2])],
)
def test_labels_out_of_range_in_parquet(tmp_path, case, labels):
    """The issue: −1 was judged against "9" (Python's negative index); 42 raised IndexError mid-run."""
    root = _parquet(tmp_path / "data", labels)
    expect_refusal(AREA_EMT, f"parquet {case}", _load_emt(root), match="label")


def test_class_label_minus_one_in_parquet(tmp_path):
    root = _parquet(tmp_path / "data", [0, -1, 2], class_label=True)
    expect_refusal(AREA_EMT, "parquet ClassLabel -1 (no label)", _load_emt(root), match="label")


def test_a_zero_byte_parquet(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test-00000-of-00001.parquet").write_bytes(b"")
    expect_refusal(AREA_EMT, "0-byte parquet", _load_emt(tmp_path / "data"), match="parquet")


def test_a_parquet_that_is_text(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test-00000-of-00001.parquet").write_text("PAR1 but not really")
    expect_refusal(AREA_EMT, "text named .parquet", _load_emt(tmp_path / "data"), match="parquet")


@pytest.mark.parametrize("kind", ["text named .png", "decompression bomb png", "0-byte png", "truncated png"])
def test_an_undecodable_image_inside_parquet(tmp_path, kind):
    root = _parquet(tmp_path / "data", [0, 1, 2], [_png(), IMAGE_FILES[kind](), _png()])
    expect_refusal(AREA_EMT, f"parquet image: {kind}", _load_emt(root), match="row 1")


def test_a_parquet_without_a_label_column(tmp_path):
    import datasets

    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict({"img": [{"bytes": _png(), "path": None}]}).cast_column(
        "img", datasets.Image()
    ).to_parquet(tmp_path / "data" / "test.parquet")
    expect_refusal(AREA_EMT, "parquet without label column", _load_emt(tmp_path / "data"), match="label")


def test_string_labels_in_parquet(tmp_path):
    import datasets

    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict(
        {"img": [{"bytes": _png(), "path": None}] * 2, "label": ["cat", "dog"]}
    ).cast_column("img", datasets.Image()).to_parquet(tmp_path / "data" / "test.parquet")
    expect_refusal(AREA_EMT, "parquet with string labels", _load_emt(tmp_path / "data"), match="label")


# --- VL: the REFER pickle and annotation JSON -----------------------------------------------


def _refcoco(root: Path) -> Path:
    write_refcoco(root, refs_per_subset=10)
    return root


def test_a_crafted_refs_pickle_runs_nothing(tmp_path):
    """The issue: a crafted refs(unc).p ran a shell command before the run stopped."""
    root = _refcoco(tmp_path / "refcoco-data")
    sentinel = tmp_path / "PWNED"
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([RunsCode(sentinel)], protocol=2))
    expect_refusal(
        AREA_VL,
        "refs(unc).p calls os.system",
        lambda: load_vl_dataset("refcoco", slim=True, data_dir=str(root)),
        sentinel=sentinel,
        match=r"refs\(unc\)\.p",
    )
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("case", "payload"),
    [
        ("truncated pickle", lambda: pickle.dumps([{"a": 1}] * 10)[:20]),
        ("0-byte pickle", lambda: b""),
        ("a dict, not a list", lambda: pickle.dumps({"refs": []})),
        (
            "refs without sentences",
            lambda: pickle.dumps([{"ref_id": 1, "split": "val", "image_id": 0, "ann_id": 1}]),
        ),
        ("a ref that is a string", lambda: pickle.dumps(["val"])),
        ("JSON instead of a pickle", lambda: b'[{"ref_id": 1}]'),
    ],
)
def test_broken_refs_pickles(tmp_path, case, payload):
    root = _refcoco(tmp_path / "refcoco-data")
    (root / "refcoco" / "refs(unc).p").write_bytes(payload())
    expect_refusal(AREA_VL, case, lambda: load_vl_dataset("refcoco", slim=True, data_dir=str(root)))


INSTANCES_TEXT = {
    "NaN width": '{"images": [{"id": 0, "width": NaN, "height": 30}], "annotations": []}',
    "duplicate key": '{"images": [], "images": [], "annotations": []}',
    "deep nesting": "[" * 100_000 + "]" * 100_000,
    "truncated": '{"images": [{"id": 0, "wid',
}


@pytest.mark.parametrize("case", INSTANCES_TEXT)
def test_broken_instances_json(tmp_path, case):
    root = _refcoco(tmp_path / "refcoco-data")
    (root / "refcoco" / "instances.json").write_text(INSTANCES_TEXT[case])
    expect_refusal(
        AREA_VL, f"instances.json: {case}", lambda: load_vl_dataset("refcoco", slim=True, data_dir=str(root))
    )


def test_non_utf8_annotations(tmp_path):
    write_textvqa(tmp_path, 3)
    path = tmp_path / "TextVQA_0.5.1_val.json"
    path.write_bytes(path.read_bytes().replace(b"what brand?", "qu\xe9 marca?".encode("latin-1")))
    expect_refusal(
        AREA_VL,
        "non-UTF-8 TextVQA json",
        lambda: load_vl_dataset("textvqa", slim=True, data_dir=str(tmp_path)),
        match="UTF-8",
    )


@pytest.mark.parametrize(
    ("case", "edit"),
    [
        ("bbox of 3 numbers", lambda ann: ann.update(bbox=[1.0, 2.0, 3.0])),
        ("bbox of strings", lambda ann: ann.update(bbox=["a", "b", "c", "d"])),
        ("zero-width bbox", lambda ann: ann.update(bbox=[1.0, 2.0, 0.0, 5.0])),
    ],
)
def test_odd_boxes(tmp_path, case, edit):
    root = _refcoco(tmp_path / "refcoco-data")
    path = root / "refcoco" / "instances.json"
    data = json.loads(path.read_text())
    for annotation in data["annotations"]:
        edit(annotation)
    path.write_text(json.dumps(data))
    expect_refusal(AREA_VL, case, lambda: load_vl_dataset("refcoco", slim=True, data_dir=str(root)))


def test_missing_images_are_named_before_the_run(tmp_path):
    write_gqa(tmp_path, 5)
    for image in (tmp_path / "images").iterdir():
        image.unlink()
    expect_refusal(
        AREA_VL,
        "GQA images missing",
        lambda: load_vl_dataset("gqa", slim=True, data_dir=str(tmp_path)),
        match="image",
    )


def test_questions_that_are_not_text(tmp_path):
    write_vqav2(tmp_path, [1, 2, 3])
    path = tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json"
    data = json.loads(path.read_text())
    data["questions"][0]["question"] = {"text": "how many?"}
    path.write_text(json.dumps(data))
    expect_refusal(
        AREA_VL,
        "VQAv2 question is an object",
        lambda: load_vl_dataset("vqav2", slim=True, data_dir=str(tmp_path)),
    )


@pytest.mark.parametrize("kind", ["text named .png", "decompression bomb png", "truncated png"])
def test_a_broken_vl_image_is_named_before_the_run(tmp_path, kind):
    write_gqa(tmp_path, 5)
    (tmp_path / "images" / "n1.jpg").write_bytes(IMAGE_FILES[kind]())
    expect_refusal(
        AREA_VL,
        f"GQA image: {kind}",
        lambda: load_vl_dataset("gqa", slim=True, data_dir=str(tmp_path)),
        match="n1.jpg",
    )
