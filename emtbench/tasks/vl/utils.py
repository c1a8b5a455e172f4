"""lm-eval hooks of the vision-language tasks (referenced from the YAML files with ``!function utils.*``).

lm-eval passes ``--metadata`` (merged with ``--model_args``) to ``load_task_dataset``; the VL tasks
read ``data_dir`` (original annotation files + images) and ``split`` (Hub split override).
"""

from __future__ import annotations

from typing import Any

from emtbench.tasks.runtime import check_metadata_keys, cli_metadata
from emtbench.tasks.vl.data import get_vl_dataset, load_vl_dataset
from emtbench.tasks.vl.scoring import (
    gqa_exact_match,
    normalized_reference_box,
    refcoco_scores,
    textvqa_soft_accuracy,
    vqa_soft_accuracy,
)

VQA_PROMPT = "{question}\nAnswer the question using a single word or phrase."
# RefCOCO* ask for a box, so the reference (TRI-ML vlm-evaluation, after LLaVA-1.5) uses this prompt.
REFER_PROMPT = (
    'Please provide the bounding box coordinate of the region this sentence describes: "{question}"'
)


def load_task_dataset(vl_dataset: str, slim: bool = True, **metadata: Any):
    """``custom_dataset`` hook: the task's examples as a one-split ``DatasetDict``."""
    import datasets

    check_metadata_keys(cli_metadata())
    data = load_vl_dataset(
        vl_dataset,
        slim=bool(slim),
        data_dir=str(metadata["data_dir"]) if metadata.get("data_dir") else None,
        split=str(metadata["split"]) if metadata.get("split") else None,
    )
    return datasets.DatasetDict({"eval": data})


def doc_to_image(doc: dict) -> list:
    image = doc.get("image")
    if image is None:
        from emtbench.core.images import open_image

        image = open_image(doc["image_path"], f"{doc['vl_task']} question {doc['question_id']}").convert(
            "RGB"
        )
    return [image]


def doc_to_text(doc: dict) -> str:
    template = REFER_PROMPT if get_vl_dataset(doc["vl_task"]).kind == "refcoco" else VQA_PROMPT
    return "<image>" + template.format(question=doc["question"])


def reference_box(doc: dict) -> list[float]:
    """The normalised ``[x1, y1, x2, y2]`` ground truth; the image's own size when the data lacks it."""
    width, height = doc["image_size"]
    if not width or not height:
        width, height = doc_to_image(doc)[0].size
    return normalized_reference_box(doc["bbox_xywh"], width, height)


def doc_to_target(doc: dict) -> str:
    if get_vl_dataset(doc["vl_task"]).kind == "refcoco":
        return str(reference_box(doc))
    return doc["answers"][0] if doc["answers"] else ""


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    answer = results[0]
    kind = get_vl_dataset(doc["vl_task"]).kind
    if kind == "vqa":
        return {"acc": vqa_soft_accuracy(answer, doc["answers"])}
    if kind == "textvqa":
        return {"acc": textvqa_soft_accuracy(answer, doc["answers"])}
    if kind == "gqa":
        return {"acc": gqa_exact_match(answer, doc["answers"][0])}
    scores = refcoco_scores(answer, reference_box(doc))
    subset_key = "acc_" + doc["subset"].lower().replace("+", "_plus")
    return {**scores, subset_key: scores["acc"]}
