"""Vision-language evaluation data: the original annotation files or the Hub, and the slim subsets.

The slim subsets are TRI-ML vlm-evaluation's: every question id of the evaluation split, in the order
the original annotation file lists them, shuffled once with ``random.Random(21)``; "slim" keeps the
first 1024 (RefCOCO*: the first 1024 of each of RefCOCO, RefCOCO+ and RefCOCOg in that shuffled
order). The full-size variants keep every example in the same shuffled order, so ``--limit N`` is a
random sample too. Only the original files (``data_dir``) reproduce the reference's file order; the
Hub copies are other exports whose row order (and, for RefCOCO*, row grouping) may differ, so their
slim subset can be a different 1024 examples of the same split.

Every loader returns a ``datasets.Dataset`` with the columns ``question_id``, ``question``,
``answers`` (human answers; GQA: the one answer), ``bbox_xywh`` and ``image_size`` (RefCOCO*: COCO
pixel box and [width, height], 0 when unknown), ``subset`` (RefCOCO, RefCOCO+ or RefCOCOg),
``vl_task``, and either ``image`` (Hub) or ``image_path`` (local files, opened lazily).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import read_json
from emtbench.core.registry import Registry
from emtbench.core.safe_pickle import load_plain_pickle

logger = logging.getLogger(__name__)

SLIM_SIZE = 1024
SLIM_SEED = 21
REFCOCO_SUBSETS = (
    ("RefCOCO", "refcoco", "unc"),
    ("RefCOCO+", "refcoco+", "unc"),
    ("RefCOCOg", "refcocog", "umd"),
)


@dataclass(frozen=True)
class HubSource:
    """One Hub dataset (repo, config, split) a VL task reads by default."""

    repo: str
    split: str
    config: str | None = None


@dataclass(frozen=True)
class VLDataset:
    name: str
    kind: str
    """Scoring: ``vqa`` (VQAv2 soft accuracy), ``textvqa``, ``gqa`` (exact match) or ``refcoco`` (IoU)."""
    hub: tuple[HubSource, ...]
    local_layout: str
    """What ``data_dir`` must hold, for error messages and ``--help``."""
    markers: tuple[str, ...] = ()
    """Files that identify the dataset's folder, so one data_dir can hold every VL dataset."""
    folders: tuple[str, ...] = ()
    """Sub-folder names the dataset may sit in under data_dir (TRI-ML: download/<name>)."""


VL_DATASETS: Registry[VLDataset] = Registry(
    "vision-language dataset", where="task YAML dataset_kwargs.vl_dataset"
)
for _dataset in (
    VLDataset(
        "vqav2",
        "vqa",
        (HubSource("lmms-lab/VQAv2", "validation"),),
        "v2_OpenEnded_mscoco_val2014_questions.json, v2_mscoco_val2014_annotations.json "
        "(or TRI-ML's names v2_val2014_questions.json / v2_val2014_annotations.json) and "
        "val2014/COCO_val2014_<image_id:012d>.jpg",
        ("v2_OpenEnded_mscoco_val2014_questions.json", "v2_val2014_questions.json"),
        ("vqav2", "vqa-v2"),
    ),
    VLDataset(
        "gqa",
        "gqa",
        (HubSource("lmms-lab/GQA", "testdev", "testdev_balanced_instructions"),),
        "testdev_balanced_questions.json and images/<imageId>.jpg",
        ("testdev_balanced_questions.json",),
        ("gqa",),
    ),
    VLDataset(
        "textvqa",
        "textvqa",
        (HubSource("lmms-lab/textvqa", "validation"),),
        "TextVQA_0.5.1_val.json and train_images/<image_id>.jpg (or train_val_images/)",
        ("TextVQA_0.5.1_val.json",),
        ("textvqa", "text-vqa"),
    ),
    VLDataset(
        "refcoco",
        "refcoco",
        (
            HubSource("lmms-lab/RefCOCO", "val"),
            HubSource("lmms-lab/RefCOCOplus", "val"),
            HubSource("lmms-lab/RefCOCOg", "val"),
        ),
        "refcoco/refs(unc).p + refcoco/instances.json, refcoco+/refs(unc).p + instances.json, "
        "refcocog/refs(umd).p + instances.json, and train2014/COCO_train2014_<image_id:012d>.jpg",
        ("refcoco/refs(unc).p",),
        ("refcoco",),
    ),
):
    VL_DATASETS.add(_dataset.name, _dataset)
GQA_IMAGES = HubSource("lmms-lab/GQA", "testdev", "testdev_balanced_images")


def get_vl_dataset(name: str) -> VLDataset:
    return VL_DATASETS.get(name)


# --- the reference's selection ------------------------------------------------------------------


def shuffled_order(count: int, seed: int = SLIM_SEED) -> list[int]:
    """Positions 0..count-1 in the order ``Random(seed).shuffle`` leaves a list of that length.

    The reference shuffles its list of question ids; a shuffle's permutation depends only on the
    list's length, so shuffling positions picks the same examples whatever the ids look like.
    """
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def slim_positions(groups: Sequence[str], size: int | None, seed: int = SLIM_SEED) -> list[int]:
    """Positions of the examples a slim (or, with size None, full) split keeps, in shuffled order.

    ``groups`` names each example's sub-dataset; each group keeps its first ``size`` examples of the
    shuffled order (one group for VQAv2/GQA/TextVQA, three for RefCOCO*).
    """
    order = shuffled_order(len(groups), seed)
    if size is None:
        return order
    kept: list[int] = []
    counts: dict[str, int] = {}
    for position in order:
        group = groups[position]
        if counts.get(group, 0) < size:
            kept.append(position)
            counts[group] = counts.get(group, 0) + 1
    return kept


# --- local copies of the original files ----------------------------------------------------------


def dataset_root(data_dir: Path, dataset: VLDataset) -> Path:
    """The folder holding this dataset's files: data_dir itself, data_dir/<name> or data_dir/download/<name>."""
    candidates = [data_dir]
    for folder in dataset.folders:
        candidates += [data_dir / folder, data_dir / "download" / folder]
    for candidate in candidates:
        if any((candidate / marker).exists() for marker in dataset.markers):
            return candidate
    raise EmtbenchError(
        f"no {dataset.name} files in {data_dir} (nor in its sub-folders {', '.join(dataset.folders)})",
        where="--metadata data_dir",
        fix=f"point data_dir at a folder holding {dataset.local_layout}, or at a parent with a "
        f"{dataset.folders[0]}/ sub-folder holding them",
    )


def _first_existing(root: Path, names: Sequence[str], what: str, layout: str) -> Path:
    for name in names:
        if (root / name).exists():
            return root / name
    raise EmtbenchError(
        f"{what} not found in {root} (looked for {', '.join(names)})",
        where="--metadata data_dir",
        fix=f"point data_dir at a folder holding {layout}",
    )


def _read_json(path: Path) -> Any:
    return read_json(path, what="annotation file", fix="re-download the original annotation file")


def _record(question_id: Any, question: str, image_path: Path | str, **extra: Any) -> dict[str, Any]:
    """One example; a field of the wrong type or shape raises ValueError (reported with the folder)."""
    answers = extra.get("answers", [])
    if not isinstance(question, str) or not all(isinstance(a, str) for a in answers):
        raise ValueError(f"question or answers of {question_id!r} are not text")
    box = [float(c) for c in extra.get("bbox_xywh", [])]
    if box and (len(box) != 4 or not all(math.isfinite(c) for c in box) or box[2] <= 0 or box[3] <= 0):
        raise ValueError(f"bbox {extra.get('bbox_xywh')!r} of {question_id!r} is not [x, y, width, height]")
    size = [int(c) for c in extra.get("image_size", [0, 0])]
    if len(size) != 2 or min(size) < 0:
        raise ValueError(f"image size {extra.get('image_size')!r} of {question_id!r} is not [width, height]")
    return {
        "question_id": str(question_id),
        "question": question,
        "answers": answers,
        "bbox_xywh": box,
        "image_size": size,
        "subset": extra.get("subset", ""),
        "image_path": str(image_path),
    }


def _vqav2_local(root: Path, layout: str) -> list[dict[str, Any]]:
    questions = _read_json(
        _first_existing(
            root,
            ("v2_OpenEnded_mscoco_val2014_questions.json", "v2_val2014_questions.json"),
            "VQAv2 questions",
            layout,
        )
    )
    annotations = _read_json(
        _first_existing(
            root,
            ("v2_mscoco_val2014_annotations.json", "v2_val2014_annotations.json"),
            "VQAv2 annotations",
            layout,
        )
    )
    images = _first_existing(root, ("val2014", "images_val2014", "images"), "VQAv2 image folder", layout)
    text_of = {q["question_id"]: q["question"] for q in questions["questions"]}
    return [  # the reference indexes questions in the annotation file's order
        _record(
            ann["question_id"],
            text_of[ann["question_id"]],
            images / f"COCO_val2014_{ann['image_id']:012d}.jpg",
            answers=[a["answer"] for a in ann["answers"]],
        )
        for ann in annotations["annotations"]
    ]


def _gqa_local(root: Path, layout: str) -> list[dict[str, Any]]:
    questions = _read_json(
        _first_existing(root, ("testdev_balanced_questions.json",), "GQA questions", layout)
    )
    images = _first_existing(root, ("images",), "GQA image folder", layout)
    return [
        _record(qid, ex["question"], images / f"{ex['imageId']}.jpg", answers=[ex["answer"]])
        for qid, ex in questions.items()
    ]


def _textvqa_local(root: Path, layout: str) -> list[dict[str, Any]]:
    data = _read_json(_first_existing(root, ("TextVQA_0.5.1_val.json",), "TextVQA annotations", layout))[
        "data"
    ]
    images = _first_existing(
        root,
        ("train_val_images/train_images", "train_images", "train_val_images"),
        "TextVQA image folder",
        layout,
    )
    return [
        _record(ex["question_id"], ex["question"], images / f"{ex['image_id']}.jpg", answers=ex["answers"])
        for ex in data
    ]


def _refcoco_local(root: Path, layout: str) -> list[dict[str, Any]]:
    images = _first_existing(root, ("train2014", "images"), "COCO train2014 image folder", layout)
    records = []
    for subset, folder, split_by in REFCOCO_SUBSETS:
        refs_file = _first_existing(root / folder, (f"refs({split_by}).p",), f"{subset} refs", layout)
        instances = _read_json(
            _first_existing(root / folder, ("instances.json",), f"{subset} instances", layout)
        )
        # The REFER toolkit's own format is a pickle; downloaded data is untrusted, so only plain
        # containers and scalars are admitted (a crafted file cannot run anything).
        refs = load_plain_pickle(
            refs_file, fix="re-download the REFER annotations (refs(unc).p / refs(umd).p)"
        )
        if not isinstance(refs, list):
            raise EmtbenchError(
                f"holds a {type(refs).__name__}, not the REFER toolkit's list of refs",
                where=str(refs_file),
                fix="re-download the REFER annotations",
            )
        boxes = {ann["id"]: ann["bbox"] for ann in instances["annotations"]}
        sizes = {img["id"]: (img["width"], img["height"]) for img in instances["images"]}
        # The REFER API's getRefIds(split="val"): refs in file order; one example per sentence.
        for ref in refs:
            if ref["split"] != "val":
                continue
            for sentence in ref["sentences"]:
                records.append(
                    _record(
                        f"{subset}-{ref['ref_id']}-{sentence['sent_id']}",
                        sentence["sent"],
                        images / f"COCO_train2014_{ref['image_id']:012d}.jpg",
                        bbox_xywh=boxes[ref["ann_id"]],
                        image_size=sizes[ref["image_id"]],
                        subset=subset,
                    )
                )
    return records


LOCAL_LOADERS: dict[str, Callable[[Path, str], list[dict[str, Any]]]] = {
    "vqav2": _vqav2_local,
    "gqa": _gqa_local,
    "textvqa": _textvqa_local,
    "refcoco": _refcoco_local,
}


# --- Hub copies ----------------------------------------------------------------------------------


def _load_hub(source: HubSource, split: str | None):
    import datasets

    from emtbench.datasets.loading import hub_reachable

    try:
        if not hub_reachable():  # seconds, instead of a minute of retries
            raise ConnectionError("the Hugging Face Hub is unreachable (or HF_HUB_OFFLINE is set)")
        return datasets.load_dataset(source.repo, source.config, split=split or source.split)
    except (ConnectionError, OSError, ValueError) as error:
        raise EmtbenchError(
            f"could not load {source.repo}"
            + (f" ({source.config})" if source.config else "")
            + f" split {split or source.split!r} from the Hub: {error}",
            fix='connect to the Hub, or pass the original files: --metadata \'{"data_dir": "/path/to/dataset"}\'',
        ) from error


def _hub_records(dataset: VLDataset, split: str | None) -> tuple[list[dict[str, Any]], list[tuple[Any, int]]]:
    """Records plus, for each, (Hub table holding its image, row in that table)."""
    records: list[dict[str, Any]] = []
    image_rows: list[tuple[Any, int]] = []
    if dataset.name == "gqa":
        questions = _load_hub(dataset.hub[0], split)
        images = _load_hub(GQA_IMAGES, split)
        row_of_image = {image_id: row for row, image_id in enumerate(images["id"])}
        columns = questions.select_columns(["id", "imageId", "question", "answer"]).to_list()
        for ex in columns:
            records.append(_record(ex["id"], ex["question"], "", answers=[ex["answer"]]))
            image_rows.append((images, row_of_image[ex["imageId"]]))
    elif dataset.name == "refcoco":
        for (subset, _, _), source in zip(REFCOCO_SUBSETS, dataset.hub, strict=True):
            table = _load_hub(source, split)
            for row, ex in enumerate(table.select_columns(["question_id", "answer", "bbox"]).to_list()):
                # lmms-lab keeps one row per annotated box with its referring sentences in `answer`.
                for number, sentence in enumerate(ex["answer"]):
                    records.append(
                        _record(
                            f"{subset}-{ex['question_id']}-{number}",
                            sentence,
                            "",
                            bbox_xywh=ex["bbox"],
                            subset=subset,
                        )
                    )
                    image_rows.append((table, row))
    else:
        table = _load_hub(dataset.hub[0], split)
        for row, ex in enumerate(table.select_columns(["question_id", "question", "answers"]).to_list()):
            answers = [a["answer"] if isinstance(a, dict) else a for a in ex["answers"]]
            records.append(_record(ex["question_id"], ex["question"], "", answers=answers))
            image_rows.append((table, row))
    return records, image_rows


# --- entry point ---------------------------------------------------------------------------------


def load_vl_dataset(name: str, *, slim: bool, data_dir: str | None = None, split: str | None = None):
    """The task's examples (slim or full), from ``data_dir`` if given, else from the Hub."""
    import datasets

    dataset = get_vl_dataset(name)
    size = SLIM_SIZE if slim else None
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise EmtbenchError(
                f"{root} is not a folder",
                where="--metadata data_dir",
                fix=f"it must hold {dataset.local_layout}",
            )
        folder = dataset_root(root, dataset)
        try:
            records = LOCAL_LOADERS[name](folder, dataset.local_layout)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as error:
            raise EmtbenchError(
                f"{name} files in {folder} are not in the original format (missing or odd field {error})",
                where="--metadata data_dir",
                fix=f"use the unmodified original files: {dataset.local_layout}",
            ) from error
        keep = slim_positions([r["subset"] for r in records], size)
        kept = [records[i] for i in keep]
        missing = [r["image_path"] for r in kept if not Path(r["image_path"]).is_file()]
        if missing:
            raise EmtbenchError(
                f"{len(missing)} image(s) of the {name} examples are missing, e.g. {missing[0]}",
                where="--metadata data_dir",
                fix=f"download the images too: {dataset.local_layout}",
            )
        _check_local_images(sorted({r["image_path"] for r in kept}), name)
        table = datasets.Dataset.from_list(kept)
    else:
        records, image_rows = _hub_records(dataset, split)
        keep = slim_positions([r["subset"] for r in records], size)
        kept = [records[i] for i in keep]
        for record in kept:
            del record["image_path"]
        image_column = _gather_images([image_rows[i] for i in keep])
        table = datasets.Dataset.from_list(kept).add_column("image", image_column, feature=datasets.Image())
    if len(table) == 0:
        raise EmtbenchError(
            f"no {name} examples found", where=data_dir or "Hub", fix=f"expected {dataset.local_layout}"
        )
    return table.add_column("vl_task", [name] * len(table))


def _check_local_images(paths: list[str], name: str) -> None:
    """Decode-check each image once before the run (a broken one would stop lm-eval mid-run)."""
    from emtbench.core.images import check_image
    from emtbench.core.progress import progress_bar

    for path in progress_bar(
        paths, desc=f"checking {name} images", unit="image", min_items=2000, leave=False
    ):
        try:
            check_image(path, path)
        except EmtbenchError as error:
            raise EmtbenchError(
                f"cannot read image {path} ({error.problem})", where="--metadata data_dir", fix=error.fix
            ) from None


def _gather_images(image_rows: list[tuple[Any, int]]) -> list[Any]:
    """The encoded images of the kept rows (decoding happens only when lm-eval reads a document)."""
    out: list[Any] = [None] * len(image_rows)
    by_table: dict[int, tuple[Any, list[tuple[int, int]]]] = {}
    for index, (table, row) in enumerate(image_rows):
        by_table.setdefault(id(table), (table, []))[1].append((index, row))
    import datasets

    for table, wanted in by_table.values():
        raw = table.select([row for _, row in wanted]).cast_column("image", datasets.Image(decode=False))[
            "image"
        ]
        for (index, _), image in zip(wanted, raw, strict=True):
            out[index] = image
    return out
