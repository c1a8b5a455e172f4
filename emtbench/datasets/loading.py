"""Load an EMT dataset from the Hub, a local copy or an offline source, and draw the paper's subset.

Every loader returns a ``datasets.Dataset`` with the columns ``image`` (decoded lazily to PIL),
``label`` (index into :attr:`EMTDataset.labels`) and ``emt_task``, whatever the source looked like.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from emtbench.core.cache import user_cache_dir
from emtbench.core.errors import EmtbenchError
from emtbench.core.fsutil import staged_directory
from emtbench.core.options import option
from emtbench.datasets.emt import EMTDataset

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SOURCES = ("auto", "hub", "offline")


@dataclass(frozen=True)
class DataOptions:
    """Which images a task evaluates on: the ``--metadata`` keys that select data."""

    data_dir: str | None = option(
        None, help="local copy: image folder with one sub-folder per class, or parquet/arrow files"
    )
    split: str | None = option(None, help="dataset split (default: test)")
    fraction: float | None = option(
        None, help="evaluate a fixed random share of the split (the paper: 0.2 of train)"
    )
    seed: int = option(0, help="seed of that share (default 0)")
    source: str = option("auto", help="auto (Hub, else offline copy) | hub | offline")

    KEYS = ("data_dir", "split", "fraction", "seed", "source")

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> DataOptions:
        fraction = metadata.get("fraction")
        if fraction is not None:
            try:
                fraction = float(fraction)
            except (TypeError, ValueError):
                fraction = -1.0
            if not 0.0 < fraction <= 1.0:
                raise EmtbenchError(
                    f"fraction must be a number in (0, 1], got {metadata.get('fraction')!r}",
                    where="--metadata fraction",
                    fix='e.g. --metadata \'{"split": "train", "fraction": 0.2, "seed": 0}\'',
                )
        seed = metadata.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int | str) or not str(seed).lstrip("-").isdigit():
            raise EmtbenchError(
                f"seed must be an integer, got {seed!r}", where="--metadata seed", fix='e.g. "seed": 0'
            )
        source = str(metadata.get("source", "auto"))
        if source not in SOURCES:
            raise EmtbenchError(
                f"source must be one of {', '.join(SOURCES)}, got {source!r}",
                where="--metadata source",
                fix='"auto" tries the Hub and falls back to an offline copy; "offline" never asks the Hub',
            )
        data_dir = metadata.get("data_dir")
        split = metadata.get("split")
        return cls(
            data_dir=str(data_dir) if data_dir else None,
            split=str(split) if split else None,
            fraction=fraction,
            seed=int(seed),
            source=source,
        )


def load_emt_dataset(dataset: EMTDataset, options: DataOptions):
    """The evaluation images of one task, as the options select them."""
    data = subset(load_emt_split(dataset, options), options.fraction, options.seed)
    if options.data_dir:  # files from elsewhere: every image of the evaluated subset is checked up front
        check_images(data, options.data_dir)
    return data.add_column("emt_task", [dataset.task] * len(data))


def load_emt_split(dataset: EMTDataset, options: DataOptions):
    """The whole split the options name (before :func:`subset`), from wherever the options say."""
    split = options.split or dataset.default_split
    if options.data_dir:
        return load_local(dataset, Path(options.data_dir).expanduser(), split)
    if options.source == "offline" or (options.source == "auto" and _prefer_offline(dataset)):
        return load_offline(dataset, split)
    return load_hub(dataset, split, allow_fallback=options.source == "auto")


def subset(data, fraction: float | None, seed: int):
    """The paper's protocol: a fixed random share of the split, in the split's own order."""
    if fraction is None or fraction >= 1.0:
        return data
    count = max(1, round(fraction * len(data)))
    chosen = sorted(random.Random(seed).sample(range(len(data)), count))
    return data.select(chosen)


# --- Hub ---------------------------------------------------------------------------------------


def _hub_offline_env() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so an unreachable Hub costs seconds rather than a minute of retries."""
    if _hub_offline_env():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _prefer_offline(dataset: EMTDataset) -> bool:
    return dataset.hub_id is None or (dataset.offline_source is not None and not hub_reachable())


def load_hub(dataset: EMTDataset, split: str, *, allow_fallback: bool):
    import datasets

    if dataset.hub_id is None:
        return load_offline(dataset, split)
    try:
        if not hub_reachable():
            raise ConnectionError("the Hugging Face Hub is unreachable (or HF_HUB_OFFLINE is set)")
        data = datasets.load_dataset(dataset.hub_id, split=split)
    except (ConnectionError, OSError) as error:
        if allow_fallback and dataset.offline_source:
            logger.warning("%s: Hub unavailable (%s); using the offline copy", dataset.task, error)
            return load_offline(dataset, split)
        raise EmtbenchError(
            f"could not load {dataset.hub_id!r} (split {split!r}) from the Hub and no data_dir was given ({error})",
            where=dataset.task,
            fix=f'connect to the Hub, or pass a local copy: --metadata \'{{"data_dir": "/path/to/{dataset.name}"}}\' '
            "(an image folder with one sub-folder per class, or parquet/arrow files with the Hub's columns)",
        ) from error
    except ValueError as error:  # datasets raises ValueError for an unknown split
        raise EmtbenchError(
            str(error), where=f"{dataset.task} split", fix="pick an existing split"
        ) from error
    return _standardise_columns(data, dataset, where=dataset.hub_id)


def _standardise_columns(data, dataset: EMTDataset, *, where: str):
    """Rename the source's image/label columns to ``image``/``label`` and drop the rest."""
    import datasets

    columns = set(data.column_names)
    image_col = next((c for c in (dataset.image_column, "image", "img") if c in columns), None)
    label_col = next((c for c in (dataset.label_column, "label") if c in columns), None)
    if image_col is None or label_col is None:
        raise EmtbenchError(
            f"expected an image column ({dataset.image_column!r}) and a label column "
            f"({dataset.label_column!r}), found {sorted(columns)}",
            where=where,
            fix="provide files with the Hub dataset's columns",
        )
    data = data.select_columns([image_col, label_col])
    if image_col != "image":
        data = data.rename_column(image_col, "image")
    if label_col != "label":
        data = data.rename_column(label_col, "label")
    if not isinstance(data.features["image"], datasets.Image):
        data = data.cast_column("image", datasets.Image())
    label_feature = data.features["label"]
    if isinstance(label_feature, datasets.ClassLabel):
        _check_labels(data, len(label_feature.names), where)
        data = _align_class_labels(data, label_feature.names, dataset, where)
    _check_labels(data, len(dataset.labels), where)
    return data


def _check_labels(data, count: int, where: str) -> None:
    """Every label is an integer index into ``count`` labels.

    A -1 ("no label" in a ClassLabel column) would otherwise be judged against the last label
    (Python's negative indexing), and an index past the end would raise IndexError mid-run.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    column = data.data.column("label")
    if not pa.types.is_integer(column.type):
        raise EmtbenchError(
            f"the label column holds {column.type} values, not integer label indices",
            where=where,
            fix="store labels as integer indices into the task's label list (or as a ClassLabel)",
        )
    if column.null_count:
        raise EmtbenchError(f"{column.null_count} row(s) have no label", where=where, fix="label every row")
    if len(column) == 0:
        return
    bounds = pc.min_max(column).as_py()
    if bounds["min"] < 0 or bounds["max"] >= count:
        bad = pc.indices_nonzero(pc.or_(pc.less(column, 0), pc.greater_equal(column, count)))
        first = bad[0].as_py()
        raise EmtbenchError(
            f"{len(bad)} label(s) out of range 0..{count - 1}, e.g. label {column[first].as_py()} in row {first}",
            where=where,
            fix="labels are indices into the task's label list; drop or fix the rows with other values",
        )


def check_images(data, where: str) -> None:
    """Decode-check every image of ``data`` (header, PIL's bomb limit, verify) before the run.

    A broken or hostile image would otherwise stop lm-eval mid-run with PIL's traceback.
    """
    import datasets

    from emtbench.core.images import check_encoded_images

    raw = data.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    cells = (row["image"] for row in raw)
    check_encoded_images(_progress(cells, f"checking images of {where}", total=len(raw)), where)


def _align_class_labels(data, names: list[str], dataset: EMTDataset, where: str):
    """Map a ClassLabel's names onto the task's label order (they may be WordNet ids or renamed)."""
    mapping = [_match_label(name, dataset) for name in names]
    unknown = [n for n, m in zip(names, mapping, strict=True) if m is None]
    if unknown:
        raise EmtbenchError(
            f"label names {unknown[:5]} do not match {dataset.task}'s labels",
            where=where,
            fix="use the dataset the task expects",
        )
    if mapping == list(range(len(names))):
        return data
    return data.map(lambda row: {"label": mapping[row["label"]]}, desc="aligning labels")


# --- offline -----------------------------------------------------------------------------------


def load_offline(dataset: EMTDataset, split: str):
    from emtbench.datasets.offline import OFFLINE_SOURCES

    if dataset.offline_source is None:
        raise EmtbenchError(
            f"{dataset.task} has no offline source",
            where="--metadata source",
            fix='drop "source": "offline", or pass a local copy with "data_dir"',
        )
    source = OFFLINE_SOURCES[dataset.offline_source]
    # A source whose split order changed carries a cache_version, so an older cached copy is not reused.
    version = getattr(source, "cache_version", None)
    suffix = f"-v{version}" if version is not None else ""
    cache = user_cache_dir() / "datasets" / f"{dataset.offline_source}-{split}{suffix}"
    if (cache / "dataset_info.json").is_file():
        import datasets

        return datasets.load_from_disk(str(cache))
    images, labels = source(split)
    data = arrays_to_dataset(images, labels)
    _save_atomically(data, cache)
    return data


def _save_atomically(data, target: Path) -> None:
    """Encoding 60k PNGs takes a minute; keep the result so every later load is a memory map."""
    try:
        with staged_directory(target) as staging:
            data.save_to_disk(str(staging))
    except OSError as error:  # a read-only cache only costs speed
        logger.warning("could not cache %s (%s)", target, error)


def arrays_to_dataset(images, labels):
    """uint8 image arrays + int labels -> a Dataset of PNG-encoded images."""
    import datasets
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in images], "label": [int(x) for x in labels]},
        features=features,
    )


# --- local copies ------------------------------------------------------------------------------


def load_local(dataset: EMTDataset, root: Path, split: str):
    if not root.is_dir():
        raise EmtbenchError(
            f"data_dir {str(root)!r} is not a directory",
            where="--metadata data_dir",
            fix="point data_dir at an image folder (one sub-folder per class) or at parquet/arrow files",
        )
    if (root / "dataset_dict.json").is_file() or (root / "dataset_info.json").is_file():
        return _load_saved(dataset, root, split)
    tables = sorted(p for p in root.rglob("*") if p.suffix in (".parquet", ".arrow") and p.is_file())
    if tables:
        return _load_tables(dataset, root, tables, split)
    return load_image_folder(dataset, root, split)


def _load_saved(dataset: EMTDataset, root: Path, split: str):
    import datasets

    saved = datasets.load_from_disk(str(root))
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise EmtbenchError(
                f"split {split!r} not in the saved dataset (has {sorted(saved)})",
                where=str(root),
                fix="pick one with --metadata '{\"split\": ...}'",
            )
        saved = saved[split]
    return _standardise_columns(saved, dataset, where=str(root))


def _split_of(path: Path, root: Path) -> str | None:
    for part in path.relative_to(root).parts:
        match = re.match(r"^(train|test|validation|valid|val)(?:[-_.]|$)", part)
        if match:
            return match.group(1)
    return None


def _load_tables(dataset: EMTDataset, root: Path, tables: list[Path], split: str):
    import datasets

    by_split: dict[str | None, list[Path]] = {}
    for path in tables:
        by_split.setdefault(_split_of(path, root), []).append(path)
    files = by_split.get(split) or (by_split.get(None) if set(by_split) == {None} else None)
    if not files:
        raise EmtbenchError(
            f"no parquet/arrow files for split {split!r} (found splits {sorted(str(s) for s in by_split)})",
            where=str(root),
            fix="name files like the Hub does (test-00000-of-00001.parquet) or pick another split",
        )
    for path in files:
        _check_table_file(path)
    builder = "parquet" if files[0].suffix == ".parquet" else "arrow"
    data = datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train")
    return _standardise_columns(data, dataset, where=str(files[0]))


def _check_table_file(path: Path) -> None:
    """A parquet or arrow file that pyarrow can open (its footer / schema), or a named error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            pq.read_metadata(path)
        else:
            with pa.memory_map(str(path)) as source:
                try:
                    pa.ipc.open_stream(source).schema  # noqa: B018 - what datasets' arrow builder reads
                except pa.ArrowInvalid:
                    source.seek(0)
                    pa.ipc.open_file(source).schema  # noqa: B018
    except (pa.ArrowInvalid, OSError) as error:
        raise EmtbenchError(
            f"not a readable {path.suffix[1:]} file ({str(error).splitlines()[0]})",
            where=str(path),
            fix="re-download or re-export the file (it is empty, truncated or not a table)",
        ) from None


def _normalise_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def _match_label(name: str, dataset: EMTDataset) -> int | None:
    wnids = dataset.wnids or ()
    if name in wnids:
        return wnids.index(name)
    key = _normalise_name(name)
    for index, label in enumerate(dataset.labels):
        if _normalise_name(label) == key or _normalise_name(label.replace("/", " ")) == key:
            return index
    return None


def load_image_folder(dataset: EMTDataset, root: Path, split: str):
    """``root/[split/]<class>/<image>``: class folders named like the labels (or their WordNet ids)."""
    import datasets

    if (root / split).is_dir():
        root = root / split
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise EmtbenchError(
            f"no class sub-folders in {root}",
            where="--metadata data_dir",
            fix=f"lay images out as {root}/<label>/<image>.png with labels from {dataset.task}",
        )
    mapping = {d: _match_label(d.name, dataset) for d in class_dirs}
    unmatched = [d.name for d, index in mapping.items() if index is None]
    if unmatched:
        expected = ", ".join(dataset.labels[:12]) + (", ..." if len(dataset.labels) > 12 else "")
        raise EmtbenchError(
            f"class folders {unmatched} in {root} match none of {dataset.task}'s labels ({expected})",
            where="--metadata data_dir",
            fix="rename the folders to the task's label names (case, '_', '-' and spaces are ignored)",
        )
    paths: list[str] = []
    labels: list[int] = []
    for class_dir, index in mapping.items():
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(path))
                labels.append(int(index))
    if not paths:
        raise EmtbenchError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}",
            where="--metadata data_dir",
            fix="put image files inside the class folders",
        )
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": paths, "label": labels}, features=features)


def _progress(items: Iterable, desc: str, total: int | None = None) -> Iterable:
    from emtbench.core.progress import progress_bar

    total = len(items) if total is None else total  # type: ignore[arg-type]
    return progress_bar(items, desc=desc, total=total, min_items=2000, leave=False)
