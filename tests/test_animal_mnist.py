"""Animal-MNIST: the restricted numpy-pickle reader (real file, crafted hostile files), the split, the task."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import pickletools
import re
from pathlib import Path

import numpy as np
import pytest

from emtbench.core.errors import EmtbenchError
from emtbench.datasets import animal_mnist as am
from emtbench.datasets.emt import get_dataset
from emtbench.datasets.loading import DataOptions, load_emt_dataset
from emtbench.judges.base import JudgeItem, Verdict
from emtbench.judges.rule import rule_judgement

IMAGES_SHA256 = "3d1bb93498a7f7cb5a4c0d5dc57d57d78adc2ac1722398921542a7515172c46f"
LABELS_SHA256 = "c5575395e636cadcdfe5764ffc8d56f56d234a4dc687096f8fc2d975dd6a5597"
"""SHA-256 of the arrays' C-order bytes, from this reader; numpy's own ``pickle.load`` of the package's
files gave the same arrays (np.array_equal, checked once by hand after reading their opcodes)."""


def _installed() -> bool:
    try:
        am.animal_mnist_folder()
    except EmtbenchError:
        return False
    return True


needs_package = pytest.mark.skipif(
    not _installed(), reason="animal-mnist is not installed (pip install --no-deps animal-mnist==0.4)"
)


class _Boom:
    """Pickles as a call of os.system; were it ever unpickled by a plain loader it would touch a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _gz(tmp_path: Path, name: str, payload: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(payload))
    return path


# --- the reader on arrays numpy pickles itself ------------------------------------------------------


@pytest.mark.parametrize("dtype", ["u1", "<i8", ">i4", "<u2", "i1"])
@pytest.mark.parametrize("protocol", [3, 4])
def test_plain_arrays_round_trip(dtype, protocol):
    array = (np.arange(2 * 3 * 4) % 100).astype(dtype).reshape(2, 3, 4)
    back = am.loads_numpy_array(pickle.dumps(array, protocol=protocol), "x")
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)
    assert not back.flags.writeable  # a view of the file's bytes


@pytest.mark.parametrize(
    "protocol, global_name",
    [(2, "_codecs.encode"), (5, "numpy._core.numeric._frombuffer")],
)
def test_array_pickles_that_need_other_globals_are_refused(protocol, global_name):
    # protocol 2 spells bytes as a _codecs.encode call, numpy's protocol 5 rebuilds through _frombuffer
    payload = pickle.dumps(np.zeros(4, np.uint8), protocol=protocol)
    with pytest.raises(EmtbenchError, match=re.escape(f"asks to load {global_name}")):
        am.loads_numpy_array(payload, "x")


def test_fortran_order_and_empty_arrays_round_trip():
    array = np.asfortranarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert np.array_equal(am.loads_numpy_array(pickle.dumps(array), "x"), array)
    empty = np.zeros((0, 28, 28), dtype=np.uint8)
    assert am.loads_numpy_array(pickle.dumps(empty), "x").shape == (0, 28, 28)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.zeros(3, dtype=np.float32), "dtype 'f4'"),
        (np.array(["a", "b"], dtype=object), "dtype 'O8'"),
        (np.zeros(2, dtype=[("a", "u1"), ("b", "u1")]), "dtype 'V2'"),
        (np.bool_(True), "asks to load numpy"),  # a scalar pickles through numpy.core.multiarray.scalar
        ({"images": 1}, "holds a dict, not one numpy array"),
        ([1, 2, 3], "holds a list"),
    ],
)
def test_other_numpy_values_are_refused(value, message):
    with pytest.raises(EmtbenchError, match=message) as caught:
        am.loads_numpy_array(pickle.dumps(value, protocol=4), "x.gz")
    assert "nothing in the file was run" in str(caught.value)


def test_os_system_pickles_are_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    for protocol in (0, 2, 4, 5):
        payload = pickle.dumps(_Boom(marker), protocol=protocol)
        assert b"system" in payload
        with pytest.raises(EmtbenchError, match=r"asks to load (posix|os|nt)\.system"):
            am.loads_numpy_array(payload, "evil.gz")
    # after a valid array, or as the array's "raw bytes"
    array = np.zeros(4, dtype=np.uint8)
    for hostile in (pickle.dumps([array, _Boom(marker)], protocol=4), _as_raw_bytes(array, marker)):
        pickletools.dis(hostile, out=io.StringIO())  # a well-formed stream
        with pytest.raises(EmtbenchError, match=r"asks to load (posix|os|nt)\.system"):
            am.loads_numpy_array(hostile, "evil.gz")
    assert not marker.exists()


def _as_raw_bytes(array: np.ndarray, marker: Path) -> bytes:
    """``array``'s protocol-4 pickle with its raw bytes replaced by a call of os.system (no memo used)."""
    valid = pickle.dumps(array, protocol=4)
    assert valid[2:3] == b"\x95"  # one FRAME (a small array): drop it, its length would be stale
    valid = valid[:2] + valid[11:]
    raw = array.tobytes()
    opcode = b"C" + bytes([len(raw)]) + raw  # SHORT_BINBYTES
    assert valid.count(opcode) == 1
    command = f"touch {marker}".encode()
    call = b"c" + os.system.__module__.encode() + b"\nsystem\n(\x8c" + bytes([len(command)]) + command + b"tR"
    return valid.replace(opcode, call, 1)


@pytest.mark.parametrize(
    "module, name",
    [
        ("numpy", "frombuffer"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
    ],
)
def test_any_other_global_is_refused(module, name):
    payload = b"\x80\x04" + f"c{module}\n{name}\n".encode() + b"(tR."
    with pytest.raises(EmtbenchError, match=re.escape(f"asks to load {module}.{name}")):
        am.loads_numpy_array(payload, "x")


def test_stand_ins_refuse_odd_arguments():
    valid = pickle.dumps(np.zeros(2, np.uint8), protocol=4)
    for old, new in ((b"K\x00\x85", b"K\x01\x85"), (b"C\x01b", b"C\x01c")):  # shape (1,), typecode b"c"
        assert valid.count(old) == 1
        with pytest.raises(EmtbenchError, match="_reconstruct with arguments"):
            am.loads_numpy_array(valid.replace(old, new, 1), "x")
    aligned = valid.replace(b"\x89\x88", b"\x88\x88", 1)  # dtype("u1", align=True, copy=True)
    assert aligned != valid
    with pytest.raises(EmtbenchError, match="aligned"):
        am.loads_numpy_array(aligned, "x")
    odd_order = valid.replace(b"\x8c\x01|", b"\x8c\x01?", 1)  # byte order "?"
    assert odd_order != valid
    with pytest.raises(EmtbenchError, match="unknown byte order"):
        am.loads_numpy_array(odd_order, "x")


def test_state_that_lies_about_its_size_is_refused():
    payload = pickle.dumps(np.zeros((2, 2), np.uint8), protocol=4)
    lying = payload.replace(b"K\x02K\x02\x86", b"K\x02K\x03\x86", 1)
    assert lying != payload
    with pytest.raises(EmtbenchError, match=r"claims shape \(2, 3\) of uint8 \(6 bytes\) but holds 4 bytes"):
        am.loads_numpy_array(lying, "x")


def test_truncated_and_non_pickle_data_are_named_errors(tmp_path):
    payload = pickle.dumps(np.zeros(100, np.uint8))
    with pytest.raises(EmtbenchError, match="not a readable numpy pickle"):
        am.loads_numpy_array(payload[:40], "x")
    with pytest.raises(EmtbenchError, match="cannot read the gzip file"):
        path = tmp_path / "plain.gz"
        path.write_bytes(b"not gzip at all")
        am.load_gzipped_numpy_array(path)


def test_gzip_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(am, "MAX_UNZIPPED_BYTES", 1000)
    path = _gz(tmp_path, "big.gz", pickle.dumps(np.zeros(5000, np.uint8)))
    with pytest.raises(EmtbenchError, match="unzips to more than"):
        am.load_gzipped_numpy_array(path)


# --- finding the files and checking them ---------------------------------------------------------


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.delenv(am.ANIMAL_MNIST_DIR_ENV, raising=False)
    monkeypatch.setattr(am, "ANIMAL_MNIST_PACKAGE", "animal_mnist_not_installed_here")
    with pytest.raises(EmtbenchError, match="not installed") as caught:
        am.animal_mnist(split="test")
    assert "pip install --no-deps animal-mnist==0.4" in str(caught.value)


def test_folder_without_the_files_is_a_named_error(tmp_path, monkeypatch):
    monkeypatch.setenv(am.ANIMAL_MNIST_DIR_ENV, str(tmp_path))
    with pytest.raises(EmtbenchError, match=re.escape(am.IMAGE_FILE)) as caught:
        am.animal_mnist("train")
    assert "pip install --no-deps animal-mnist==0.4" in str(caught.value)


def _write_files(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    _gz(folder, am.IMAGE_FILE, pickle.dumps(images, protocol=4))
    _gz(folder, am.LABEL_FILE, pickle.dumps(labels, protocol=4))


def test_files_of_another_shape_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(am.ANIMAL_MNIST_DIR_ENV, str(tmp_path))
    labels = np.repeat(np.arange(10), 1000)
    _write_files(tmp_path, np.zeros((10_000, 28, 28), np.uint8), labels + 1)
    with pytest.raises(EmtbenchError, match=r"labels range 1\.\.10, expected 0\.\.9"):
        am.animal_mnist("test")
    _write_files(tmp_path, np.zeros((10_000, 28, 28), np.uint8), np.sort(labels[::-1] % 9))
    with pytest.raises(EmtbenchError, match="class sizes"):
        am.animal_mnist("test")
    _write_files(tmp_path, np.zeros((10_000, 32, 32), np.uint8), labels)
    with pytest.raises(EmtbenchError, match=r"images are uint8 \(10000, 32, 32\)"):
        am.animal_mnist("test")
    with pytest.raises(EmtbenchError, match="no split 'validation'"):
        am.animal_mnist("validation")


def test_crafted_files_in_the_folder_are_refused_without_running(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setenv(am.ANIMAL_MNIST_DIR_ENV, str(tmp_path))
    _gz(tmp_path, am.IMAGE_FILE, pickle.dumps(_Boom(marker)))
    _gz(tmp_path, am.LABEL_FILE, pickle.dumps(np.zeros(10_000, np.int64)))
    with pytest.raises(EmtbenchError, match="refused to unpickle") as caught:
        am.animal_mnist("train")
    assert am.IMAGE_FILE in str(caught.value)
    assert not marker.exists()


def test_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(10), 1000)
    test = am.split_indices(labels, "test")
    train = am.split_indices(labels, "train")
    assert len(test) == 2000 and len(train) == 8000
    assert not set(test) & set(train) and len(set(test) | set(train)) == 10_000
    assert (np.bincount(labels[test]) == 200).all() and (np.bincount(labels[train]) == 800).all()
    assert np.array_equal(test, am.split_indices(labels, "test")) and (np.diff(train) > 0).all()
    # lm-eval's --limit N takes the first N test documents: they must mix the classes, not be 100 bears.
    assert len(set(labels[test[:100]])) == 10 and np.bincount(labels[test[:100]]).max() <= 20
    shuffled = labels.copy()  # interleaved classes get their own stratified draw too
    np.random.RandomState(5).shuffle(shuffled)
    assert (np.bincount(shuffled[am.split_indices(shuffled, "test")]) == 200).all()


# --- the real package file ---------------------------------------------------------------------


@needs_package
def test_real_file_reads_and_matches_its_checksum():
    images, labels = am.read_animal_mnist()
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and (np.bincount(labels) == 1000).all()
    assert hashlib.sha256(images.tobytes()).hexdigest() == IMAGES_SHA256
    assert hashlib.sha256(labels.tobytes()).hexdigest() == LABELS_SHA256
    assert (labels == np.repeat(np.arange(10), 1000)).all()  # stored in label blocks
    # the file names only the three numpy globals the reader maps
    with gzip.open(am.animal_mnist_folder() / am.IMAGE_FILE) as handle:
        raw = handle.read()
    globals_named = [arg for op, arg, _ in pickletools.genops(raw) if op.name == "SHORT_BINUNICODE"]
    assert globals_named == ["numpy.core.multiarray", "_reconstruct", "numpy", "ndarray", "dtype", "u1", "|"]


@needs_package
def test_task_data_from_the_package():
    dataset = get_dataset("emt_animal_mnist")
    test = load_emt_dataset(dataset, DataOptions())
    train = load_emt_dataset(dataset, DataOptions(split="train"))
    assert len(test) == 2000 and len(train) == 8000
    assert set(test.column_names) == {"image", "label", "emt_task"}
    assert set(test["emt_task"]) == {"emt_animal_mnist"}
    assert test[0]["image"].size == (28, 28) and test[0]["image"].mode == "L"
    assert np.bincount(test["label"]).tolist() == [200] * 10
    images, labels = am.animal_mnist("test")
    assert np.array_equal(np.asarray(test[7]["image"]), images[7]) and test[7]["label"] == labels[7]


# --- the task definition -----------------------------------------------------------------------


def test_prompt_answer_and_labels():
    dataset = get_dataset("animal_mnist")
    assert dataset.task == "emt_animal_mnist" and dataset.hub_id is None
    assert dataset.prompt == (
        "What is the object in the image? Please only answer a single object in bear, bird, cat, cow, "
        "dog, elephant, giraffe, horse, sheep, zebra."
    )
    assert dataset.answer(5) == "The object is a(n) elephant."
    assert dataset.answer(8) == "The object is a(n) sheep."


@pytest.mark.parametrize(
    "answer, label, verdict",
    [
        ("The object is a(n) zebra.", "zebra", Verdict.CORRECT),
        ("Giraffes.", "giraffe", Verdict.CORRECT),
        ("a flock of sheep", "sheep", Verdict.CORRECT),
        ("The object is a(n) horse.", "zebra", Verdict.WRONG),
        ("Cows", "cow", Verdict.CORRECT),
        ("bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep, zebra", "cat", Verdict.INTRINSIC),
        ("a white silhouette of an animal", "dog", Verdict.EXTRINSIC),
        ("", "dog", Verdict.EMPTY),
    ],
)
def test_rule_judge_handles_the_labels(answer, label, verdict):
    labels = get_dataset("animal_mnist").labels
    item = JudgeItem(answer=answer, label=label, labels=labels)
    assert rule_judgement(item).verdict is verdict


def test_emt_offline_group_is_unchanged():
    from emtbench.tasks import TASKS_DIR

    group = (TASKS_DIR / "emt" / "_emt_offline.yaml").read_text()
    assert "emt_animal_mnist" not in group
    task = (TASKS_DIR / "emt" / "emt_animal_mnist.yaml").read_text()
    assert "task: emt_animal_mnist" in task and "emt_dataset: animal_mnist" in task


# --- end to end (tiny random models; the numbers mean nothing, the plumbing does) -------------------


@needs_package
@pytest.mark.slow
def test_task_runs_through_lm_eval(tiny_llava_dir, tmp_path):
    from conftest import read_results, run_emtbench

    from emtbench.judges.base import METRIC_NAMES

    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
        "--device", "cpu", "--tasks", "emt_animal_mnist", "--limit", "4", "--batch_size", "2",
        "--apply_chat_template", "--output_path", str(tmp_path), "--log_samples",
    )  # fmt: skip
    assert code == 0
    metrics = read_results(tmp_path)["results"]["emt_animal_mnist"]
    assert sum(metrics[f"{name},none"] for name in METRIC_NAMES) == pytest.approx(1.0)
    samples = [
        json.loads(line)
        for path in tmp_path.rglob("samples_emt_animal_mnist_*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert len(samples) == 4
    prompt = samples[0]["arguments"]["gen_args_0"]["arg_0"]
    assert "What is the object in the image? Please only answer a single object in bear, bird," in prompt
    assert {s["target"] for s in samples} <= set(get_dataset("animal_mnist").labels)


@needs_package
@pytest.mark.slow
def test_finetune_trains_on_the_train_split(tiny_llava_dir, tmp_path):
    from conftest import run_emtbench

    from emtbench.methods.finetune.data import load_conversations

    rows = load_conversations("emt:animal_mnist", limit=6, seed=0)
    assert len(rows) == 6 and all(r["answer"].startswith("The object is a(n) ") for r in rows)
    output = tmp_path / "tuned"
    code = run_emtbench(
        "finetune", "--model", str(tiny_llava_dir), "--method", "lora", "--data", "emt:animal_mnist",
        "--limit", "4", "--max-steps", "1", "--batch-size", "2", "--output", str(output),
    )  # fmt: skip
    assert code == 0
    run = json.loads((output / "emtbench_run.json").read_text())
    assert run["data"]["train"] == "emt:animal_mnist" and run["data"]["examples"] == {"emt:animal_mnist": 4}
