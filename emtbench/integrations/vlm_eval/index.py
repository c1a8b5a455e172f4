"""Index files for EMT subsets in vlm-evaluation's layout: one JSON of examples + the image files.

vlm-evaluation's harnesses first *prepare* an index (``datasets/<family>/metadata*.json`` under its
``root_dir``, each example an id, a question, an image path and an answer), then evaluate and score
from it. The EMT index holds the same, plus a header naming the subset and where its images came
from, so an index built from one source is never silently reused for another. Example ids are lm-eval's
``doc_id`` (the position in the subset), which is what lets the two harnesses be compared sample by sample.

Images are copied byte for byte from the dataset (no re-encoding), so both harnesses decode the same pixels.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.fsutil import staged_directory
from emtbench.datasets.loading import load_emt_split, subset
from emtbench.integrations.vlm_eval.variants import EMTVariant

INDEX_FORMAT = 1
_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}


def _image_bytes(value: dict[str, Any]) -> tuple[bytes, str]:
    """The stored file of one undecoded ``datasets.Image`` value, and the suffix its format calls for."""
    from PIL import Image

    data = value.get("bytes")
    if data is None:
        path = value.get("path")
        if not path:
            raise EmtbenchError(
                "an image has neither bytes nor a path", fix="check the dataset's image column"
            )
        data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        suffix = _EXTENSIONS.get(image.format or "", ".img")
    return data, suffix


def header(variant: EMTVariant) -> dict[str, Any]:
    """What an index was built from; two indices with equal headers hold the same examples."""
    return {
        "format": INDEX_FORMAT,
        "task": variant.dataset.task,
        "dataset_id": variant.dataset_id,
        "data": variant.data_metadata(),
        "prompt": variant.dataset.prompt,
        "labels": list(variant.dataset.labels),
        "kind": variant.dataset.kind,
    }


def build_index(variant: EMTVariant, root_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``root_dir/<variant.index_file>`` and its images (once); return the index path."""
    import datasets

    root_dir = Path(root_dir)
    index_path = root_dir / variant.index_file
    if index_path.is_file() and not overwrite:
        check_index(variant, root_dir)
        return index_path
    data = load_emt_split(variant.dataset, variant.data)
    data = data.add_column("emt_row", list(range(len(data))))
    data = subset(data, variant.data.fraction, variant.data.seed)
    data = data.cast_column("image", datasets.Image(decode=False))
    examples: dict[str, dict[str, Any]] = {}
    from emtbench.core.progress import progress_bar

    with staged_directory(root_dir / variant.folder) as staging:
        (staging / "images").mkdir()
        for example_id, row in enumerate(
            progress_bar(data, total=len(data), desc=f"indexing {variant.dataset_id}", min_items=2000)
        ):
            payload, suffix = _image_bytes(row["image"])
            name = f"images/{row['emt_row']:06d}{suffix}"
            (staging / name).write_bytes(payload)
            label = int(row["label"])
            examples[str(example_id)] = {
                "example_id": example_id,
                "row": int(row["emt_row"]),
                "question": variant.dataset.prompt,
                "img_path": str(variant.folder / name),
                "label": label,
                "answer": variant.dataset.labels[label],
            }
        document = {"emtbench": header(variant), "examples": examples}
        (staging / "metadata.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    return index_path


def read_index(root_dir: str | Path, index_file: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the examples (in example-id order) of an EMT index file."""
    path = Path(root_dir) / index_file
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        head, examples = document["emtbench"], document["examples"]
    except FileNotFoundError:
        raise EmtbenchError(
            "EMT index file not found",
            where=str(path),
            fix="run vlm-evaluation's scripts/datasets/prepare.py for this family (through "
            "`emtbench vlm-eval run`), or evaluate once: the task runner builds a missing index",
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EmtbenchError(
            f"not an emtbench EMT index ({error})", where=str(path), fix="delete it and prepare again"
        ) from None
    if head.get("format") != INDEX_FORMAT:
        raise EmtbenchError(
            f"index format {head.get('format')!r}, this emtbench reads {INDEX_FORMAT}",
            where=str(path),
            fix="delete the folder and prepare again",
        )
    ordered = sorted(examples.values(), key=lambda example: int(example["example_id"]))
    return head, ordered


def check_index(variant: EMTVariant, root_dir: str | Path) -> None:
    """Fail when an existing index was built for other data, another prompt or another label list."""
    existing, _ = read_index(root_dir, variant.index_file)
    expected = header(variant)
    different = sorted(key for key in expected if existing.get(key) != expected[key])
    if different:
        raise EmtbenchError(
            f"the index was built with other {', '.join(different)} "
            f"({', '.join(f'{k}={existing.get(k)!r}' for k in different)})",
            where=str(Path(root_dir) / variant.index_file),
            fix=f"delete {Path(root_dir) / variant.folder} to rebuild it, or use another root_dir",
        )


def remove_index(variant: EMTVariant, root_dir: str | Path) -> None:
    shutil.rmtree(Path(root_dir) / variant.folder, ignore_errors=True)
