"""EMT task definitions and data loading: prompts, label lists, sources, subsets and input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emtbench.core.errors import EmtbenchError
from emtbench.datasets.emt import DATASETS, get_dataset
from emtbench.datasets.loading import DataOptions, load_emt_dataset, subset
from emtbench.tasks import TASKS_DIR
from emtbench.tasks.runtime import check_metadata_keys, cli_metadata, load_task_dataset

# Appendix C.1 of the EMT paper, copied character by character.
PAPER_MNIST_PROMPT = (
    "What is the number in the image? Please only answer a single number in 0, 1, 2, 3, 4, 5, 6, 7, 8, 9."
)
PAPER_CIFAR10_PROMPT = (
    "What is the object in the image? Please only answer a single object in airplane, automobile, "
    "bird, cat, deer, dog, frog, horse, ship, truck."
)


def test_prompts_match_the_paper():
    assert get_dataset("mnist").prompt == PAPER_MNIST_PROMPT
    assert get_dataset("digits").prompt == PAPER_MNIST_PROMPT
    assert get_dataset("cifar10").prompt == PAPER_CIFAR10_PROMPT
    cifar100 = get_dataset("cifar100").prompt
    assert cifar100.startswith(
        "What is the object in the image? Please only answer a single object in apple, "
    )
    assert cifar100.endswith(", worm.")
    assert "aquarium fish" in cifar100 and "_" not in cifar100
    mini = get_dataset("miniimagenet").prompt
    assert mini.startswith(
        "What is the object in the image? Please only answer a single object in African hunting dog, "
    )
    assert mini.endswith(", yawl.")


def test_label_lists():
    assert len(get_dataset("cifar100").labels) == 100
    assert list(get_dataset("cifar100").labels) == sorted(get_dataset("cifar100").labels)
    shared_table = Path(__file__).resolve().parents[2] / "shared" / "data" / "miniimagenet_classes.json"
    mini = get_dataset("miniimagenet")
    assert len(mini.labels) == 100 and mini.labels[0] == "house_finch" and mini.wnids[0] == "n01532829"
    if shared_table.exists():  # the package ships a copy of the project's reference table
        shared = json.loads(shared_table.read_text())["classes"]
        assert [c["name"] for c in shared] == list(mini.labels)
    assert get_dataset("fashion_mnist").labels[0] == "T-shirt/top"
    assert get_dataset("emt:cifar10") is get_dataset("emt_cifar10") is DATASETS["cifar10"]
    with pytest.raises(EmtbenchError, match="unknown EMT dataset"):
        get_dataset("svhn")


def test_answers_follow_the_finetuning_format():
    assert get_dataset("cifar10").answer(0) == "The object is a(n) airplane."
    assert get_dataset("cifar100").answer(1) == "The object is a(n) aquarium fish."
    assert get_dataset("mnist").answer(7) == "The number is 7."


def test_task_yamls_cover_every_dataset():
    names = {p.stem for p in (TASKS_DIR / "emt").glob("emt_*.yaml")}
    assert names == {d.task for d in DATASETS.values()}


def test_digits_offline_split_is_fixed_and_disjoint():
    test = load_emt_dataset(get_dataset("digits"), DataOptions())
    train = load_emt_dataset(get_dataset("digits"), DataOptions(split="train"))
    assert len(test) == 360 and len(train) == 1797 - 360
    assert set(test.column_names) == {"image", "label", "emt_task"}
    image = test[0]["image"]
    assert image.size == (8, 8) and np.asarray(image).max() > 200  # scaled from 0..16 to 0..255
    again = load_emt_dataset(get_dataset("digits"), DataOptions())
    assert test["label"] == again["label"]


def test_fashion_mnist_from_debian_files():
    if not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    data = load_emt_dataset(get_dataset("fashion_mnist"), DataOptions(source="offline", fraction=0.01))
    assert len(data) == 100
    assert data[0]["image"].size == (28, 28)
    assert set(data["label"]) <= set(range(10))


def test_fraction_and_seed_select_a_fixed_subset():
    import datasets

    data = datasets.Dataset.from_dict({"x": list(range(1000))})
    a = subset(data, 0.2, seed=3)
    b = subset(data, 0.2, seed=3)
    c = subset(data, 0.2, seed=4)
    assert len(a) == 200 and a["x"] == b["x"] and a["x"] != c["x"]
    assert a["x"] == sorted(a["x"])  # kept in the split's own order


def _write_image_folder(root: Path, labels: list[str], per_class: int = 2) -> None:
    rng = np.random.default_rng(0)
    for label in labels:
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_local_image_folder_maps_class_names(tmp_path):
    # folder names in any case / with spaces map onto the task's label order
    _write_image_folder(tmp_path, ["Airplane", "truck", "ship"])
    data = load_emt_dataset(get_dataset("cifar10"), DataOptions(data_dir=str(tmp_path)))
    assert len(data) == 6
    assert sorted(set(data["label"])) == [0, 8, 9]
    assert data[0]["image"].size == (32, 32)


def test_local_image_folder_with_split_and_wnids(tmp_path):
    mini = get_dataset("miniimagenet")
    _write_image_folder(tmp_path / "test", [mini.wnids[5], mini.wnids[7]], per_class=1)
    data = load_emt_dataset(mini, DataOptions(data_dir=str(tmp_path)))
    assert sorted(data["label"]) == [5, 7]


def test_local_parquet_with_hub_columns(tmp_path):
    import datasets

    images = [Image.new("RGB", (32, 32), (i * 20, 0, 0)) for i in range(4)]
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=list(get_dataset("cifar10").labels))}
    )
    hub_like = datasets.Dataset.from_dict({"img": images, "label": [0, 1, 2, 3]}, features=features)
    (tmp_path / "plain_text").mkdir()
    hub_like.to_parquet(tmp_path / "plain_text" / "test-00000-of-00001.parquet")
    hub_like.to_parquet(tmp_path / "plain_text" / "train-00000-of-00001.parquet")
    data = load_emt_dataset(get_dataset("cifar10"), DataOptions(data_dir=str(tmp_path), split="test"))
    assert data["label"] == [0, 1, 2, 3]
    assert data[1]["image"].getpixel((0, 0)) == (20, 0, 0)


# --- bad input: clear errors naming the problem and the fix ------------------------------------


def test_unreachable_hub_without_data_dir(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmtbenchError) as error:
        load_emt_dataset(get_dataset("cifar10"), DataOptions())
    message = str(error.value)
    assert "uoft-cs/cifar10" in message and "data_dir" in message and "Fix:" in message


def test_class_folders_that_do_not_match_labels(tmp_path):
    _write_image_folder(tmp_path, ["cat", "spaceship"])
    with pytest.raises(EmtbenchError, match=r"spaceship.*match none of emt_cifar10's labels") as error:
        load_emt_dataset(get_dataset("cifar10"), DataOptions(data_dir=str(tmp_path)))
    assert "rename the folders" in str(error.value)


def test_unreadable_image_is_named(tmp_path):
    _write_image_folder(tmp_path, ["cat"])
    broken = tmp_path / "cat" / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(EmtbenchError, match=r"cannot read image .*broken.png"):
        load_emt_dataset(get_dataset("cifar10"), DataOptions(data_dir=str(tmp_path)))


def test_unknown_metadata_key_is_rejected():
    raw = cli_metadata(["--tasks", "emt_digits", "--metadata", '{"fracton": 0.2}'])
    assert raw == {"fracton": 0.2}
    with pytest.raises(EmtbenchError, match=r"unknown metadata key.*'fracton'") as error:
        check_metadata_keys(raw)
    assert "fraction" in str(error.value)
    check_metadata_keys({"fraction": 0.2, "seed": 1, "split": "train", "data_dir": "x", "source": "auto"})


@pytest.mark.parametrize(
    ("metadata", "pattern"),
    [
        ({"fraction": 0}, "fraction must be a number in"),
        ({"fraction": "lots"}, "fraction must be a number in"),
        ({"seed": "abc"}, "seed must be an integer"),
        ({"source": "internet"}, "source must be one of"),
        ({"judge": "oracle"}, "unknown judge 'oracle'"),
    ],
)
def test_bad_metadata_values(metadata, pattern):
    with pytest.raises(EmtbenchError, match=pattern):
        load_task_dataset("digits", **metadata)


def test_task_hook_returns_one_eval_split():
    loaded = load_task_dataset("digits", fraction=0.1, seed=0, pretrained="ignored-model-arg")
    assert list(loaded) == ["eval"] and len(loaded["eval"]) == 36
    assert set(loaded["eval"]["emt_task"]) == {"emt_digits"}


def test_the_heap_is_frozen_while_a_task_generates_and_thawed_after():
    """lm-eval's per-batch gc.collect() scans only new objects during generation, and nothing stays frozen."""
    import gc

    from emtbench.tasks.runtime import judge_responses

    gc.unfreeze()  # earlier tests call the loading hook without lm-eval's filter step
    load_task_dataset("digits", source="offline")
    frozen = gc.get_freeze_count()
    assert frozen > 0
    load_task_dataset("digits", source="offline")  # a second task of the same run: no second freeze
    # No more frozen objects than before (a second freeze would add the first task's data); a few fewer
    # is fine: a frozen object still dies when its last reference goes (seen: a finished thread's locks).
    assert gc.get_freeze_count() <= frozen
    judge_responses([], [])
    assert gc.get_freeze_count() == 0


def test_building_an_emt_task_lists_no_few_shot_docs_and_a_few_shot_run_still_gets_them():
    """lm-eval's Task.__init__ would decode the whole test split for a sampler zero-shot EMT never uses."""
    from lm_eval.tasks import get_task_dict

    from emtbench.tasks.evaluation import TASKS_DIR, task_manager

    task = get_task_dict(["emt_digits"], task_manager([str(TASKS_DIR)], {}))["emt_digits"]
    task.set_fewshot_seed(1234)
    assert "_sampler" not in task.__dict__  # neither built nor decoded yet
    doc = task.test_docs()[0]
    shots = task.sampler.sample(n=2, eval_doc=doc)
    assert len(shots) == 2 and all("label" in shot for shot in shots)
    again = get_task_dict(["emt_digits"], task_manager([str(TASKS_DIR)], {}))["emt_digits"]
    again.set_fewshot_seed(1234)
    assert [s["label"] for s in again.sampler.sample(n=2, eval_doc=doc)] == [s["label"] for s in shots]
