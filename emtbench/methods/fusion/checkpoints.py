"""Loading and checking the checkpoints and calibration data that every fusion method starts from.

Everything that can be wrong with the user's input (mismatched architectures or shapes, calibration
data without answer tokens) is found here, before any model weights are loaded or fused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from emtbench.core.errors import EmtbenchError
from emtbench.core.progress import progress_bar

FROZEN_PARTS = ("embeddings", "lm_head", "vision_tower")
"""Parts left at pre-trained values unless ``--copy-finetuned`` names them."""


def _config(path: str, flag: str):
    from transformers import AutoConfig

    from emtbench.models.checked import check_config_file

    if not (Path(path).expanduser() / "config.json").is_file():
        raise EmtbenchError(
            f"{path} is not a model directory (no config.json)",
            where=flag,
            fix="pass a folder written by save_pretrained (e.g. an `emtbench finetune` output)",
        )
    check_config_file(path, where=flag)
    try:
        return AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # e.g. an unknown model_type
        raise EmtbenchError(
            f"transformers cannot read the config: {str(error).splitlines()[0]}",
            where=f"{flag} {path}",
            fix="pass a folder written by save_pretrained with this transformers version",
        ) from None


def _is_vision_language(config) -> bool:
    return hasattr(config, "vision_config")


def auto_class(config):
    """The Auto class a checkpoint loads with: image-text-to-text for VLMs, causal LM otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if _is_vision_language(config) else AutoModelForCausalLM


def _parameter_shapes(config) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes without allocating weights (built on the meta device)."""
    with torch.device("meta"):
        model = auto_class(config).from_config(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_compatible(pretrained: str, finetuned: Sequence[str]) -> None:
    """Same architecture and the same parameter names and shapes, or a clear error naming the first difference."""
    base = _config(pretrained, "--pretrained")
    base_shapes = _parameter_shapes(base)
    for path in finetuned:
        other = _config(path, "--finetuned")
        if (base.architectures or [None])[0] != (other.architectures or [None])[0] or (
            base.model_type != other.model_type
        ):
            raise EmtbenchError(
                f"architecture {(other.architectures or [other.model_type])[0]} differs from the pre-trained "
                f"{(base.architectures or [base.model_type])[0]}",
                where=f"--finetuned {path}",
                fix="fuse a fine-tuned model with the exact pre-trained checkpoint it was fine-tuned from",
            )
        shapes = _parameter_shapes(other)
        for name in sorted(set(base_shapes) | set(shapes)):
            if base_shapes.get(name) != shapes.get(name):
                raise EmtbenchError(
                    f"parameter {name} has shape {shapes.get(name)} but {base_shapes.get(name)} in the "
                    "pre-trained model",
                    where=f"--finetuned {path}",
                    fix="fuse a fine-tuned model with the exact pre-trained checkpoint it was fine-tuned from",
                )


def load_model(path: str, flag: str = "model"):
    """A checkpoint through its Auto class, in its stored dtype, in eval mode; weights that do not fit
    its config (missing, mis-shaped, NaN) are a named error, never a random initialisation."""
    from emtbench.models.checked import from_pretrained_checked

    config = _config(path, flag)
    return from_pretrained_checked(auto_class(config), path, where=flag, dtype="auto").eval()


class LazyCheckpoint(Mapping[str, torch.Tensor]):
    """A checkpoint's tensors read from its safetensors files one at a time, when asked for.

    Why: a fusion needs the pre-trained and every fine-tuned value of each parameter, but only one
    parameter at a time. Loading every checkpoint whole (and cloning the pre-trained one) held
    1 + 1 + n models in memory; reading each tensor on demand (safetensors maps the file, so a read
    is a copy out of the page cache) leaves only the model being fused in memory, which is what lets
    a 7B fusion run layer by layer. Keys are the model's own parameter names (transformers' renaming
    of legacy checkpoint keys applied); a tied parameter stored once is read under its partner's key.
    """

    def __init__(self, locations: dict[str, tuple[Path, str]], *, flag: str = "--finetuned"):
        self._locations = locations
        self._flag = flag
        """Model parameter name -> (file, key stored in that file)."""
        self._casts: dict[str, torch.dtype] = {}
        """Buffers the loaded model holds in another dtype than the file stores."""
        self._handles: dict[Path, Any] = {}
        self._finite: set[str] = set()
        """Names already read and found finite: a fusion reads a tensor several times (merge, changed
        share, run record), and checking every read took a third of a SmolLM2 task-arithmetic merge."""

    def __getitem__(self, name: str) -> torch.Tensor:
        file, stored = self._locations[name]
        if file not in self._handles:
            self._handles[file] = _open_for_reads(file)
        tensor = self._handles[file].get_tensor(stored)
        if tensor.is_floating_point() and name not in self._finite:
            if not _all_finite(tensor):
                # the eager path refuses these at load (models.checked); a lazy read refuses them here
                raise EmtbenchError(
                    f"tensor {stored} holds NaN or infinity",
                    where=f"{self._flag} {file}",
                    fix="use a checkpoint saved before training diverged",
                )
            self._finite.add(name)
        return tensor.to(self._casts[name]) if name in self._casts else tensor

    def __contains__(self, name: object) -> bool:
        return name in self._locations

    def __iter__(self) -> Iterator[str]:
        return iter(self._locations)

    def __len__(self) -> int:
        return len(self._locations)


def _open_for_reads(file: Path):
    """A safetensors handle that reads tensors with ``pread(2)`` (safetensors >= 0.8), not a memory map.

    Why: every page of a mapped file that a read touches counts in the process's resident memory
    until the handle closes, so reading the pre-trained and fine-tuned checkpoints tensor by tensor
    through maps ended with all of them resident (1.2 GB for SmolLM2-135M and two copies) although
    only one parameter's values are in use at a time. Read with pread, a tensor's bytes are held only
    while the tensor is.
    """
    from safetensors import safe_open

    try:
        return safe_open(str(file), framework="pt", backend="pread")
    except TypeError:  # an older safetensors without backends: its memory map
        return safe_open(str(file), framework="pt")


def _all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or infinity. A finite sum proves it (NaN and ±inf propagate through a sum, and inf − inf
    is NaN) in one reduction without a mask tensor, ~40x faster than ``isfinite(t).all()``; a sum that
    overflows (finite entries, huge total) falls back to the elementwise check."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _safetensors_files(folder: Path) -> dict[str, Path] | None:
    """Stored tensor key -> file, from the shard index or the single file; None without safetensors."""
    from safetensors import SafetensorError, safe_open

    from emtbench.core.readers import read_json

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = read_json(index, what="safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise EmtbenchError("no weight_map of tensor names to files", where=str(index))
        return {key: folder / file for key, file in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        return None
    try:
        with safe_open(str(single), framework="pt") as handle:
            return {key: single for key in handle.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
    except (SafetensorError, OSError):
        return None  # unreadable: the eager load names the problem


def _model_names(stored_keys, model) -> dict[str, str] | None:
    """Model parameter name -> stored key, by transformers' own load-time renaming; None when a
    conversion would change values (fused or split tensors), which only a full load reproduces."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, rename_source_key

    transforms = get_model_conversion_mapping(model)
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    expected = model.state_dict()
    names = {}
    for key in stored_keys:
        name, converter = rename_source_key(key, renamings, converters, model.base_model_prefix, expected)
        if converter is not None:
            return None
        names[name] = key
    return names


def open_checkpoint(
    path: str,
    model,
    *,
    eager: Callable[[], Mapping[str, torch.Tensor]] | None = None,
    flag: str = "--finetuned",
) -> Mapping[str, torch.Tensor]:
    """The checkpoint at ``path`` as parameter name -> tensor, lazily where its files allow it.

    ``model`` has the architecture (its ``state_dict()`` names, shapes, dtypes and tied entries).
    Lazy when the safetensors files hold every entry, after transformers' key renaming, with the same
    shape (and dtype, for parameters), and a tied group is stored once; otherwise (.bin files, value
    conversions, parameters in another dtype, a tied group stored twice) ``eager()``, by default the
    checkpoint loaded whole.
    """
    files = _safetensors_files(Path(path).expanduser())
    names = _model_names(files, model) if files is not None else None
    if names is None:
        return eager() if eager is not None else load_model(path, flag).state_dict()
    expected = model.state_dict()
    groups: dict[tuple[int, int], list[str]] = {}
    for name, tensor in expected.items():
        groups.setdefault((tensor.untyped_storage().data_ptr(), tensor.storage_offset()), []).append(name)
    locations: dict[str, tuple[Path, str]] = {}
    for members in groups.values():
        stored = [name for name in members if name in names]
        if len(stored) != 1:  # not stored at all, or a tied group stored twice
            return eager() if eager is not None else load_model(path, flag).state_dict()
        key = names[stored[0]]
        locations.update({name: (files[key], key) for name in members})
    checkpoint = LazyCheckpoint(locations, flag=flag)
    if not _metadata_matches(checkpoint, model, expected):
        return eager() if eager is not None else load_model(path, flag).state_dict()
    return checkpoint


def _metadata_matches(checkpoint: LazyCheckpoint, model, expected: dict[str, torch.Tensor]) -> bool:
    """Shapes must match; parameters' dtypes too. A buffer stored in another dtype than the loaded
    model holds it in (the flagship's int64 ``num_batches_tracked`` loads as float) is cast on read."""
    from safetensors import safe_open

    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for name, (file, key) in checkpoint._locations.items():
        by_file.setdefault(file, []).append((name, key))
    for file, pairs in by_file.items():
        if not file.is_file():
            return False  # a shard the index names is missing: the eager load names the problem
        with safe_open(str(file), framework="pt") as handle:
            for name, key in pairs:
                piece = handle.get_slice(key)
                if tuple(piece.get_shape()) != tuple(expected[name].shape):
                    return False
                if _SAFETENSORS_DTYPES.get(piece.get_dtype()) != expected[name].dtype:
                    if name in parameters:
                        return False
                    checkpoint._casts[name] = expected[name].dtype
    return True


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


def load_processor(path: str):
    """The processor (VLM) or tokenizer (text-only LM) saved next to the pre-trained weights."""
    if _is_vision_language(_config(path, "--pretrained")):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)
    from transformers import AutoTokenizer  # alone: AutoProcessor's import costs ~1.6 s

    return AutoTokenizer.from_pretrained(path)


def calibration_batches(
    spec: str,
    processor,
    *,
    samples: int,
    batch_size: int,
    seed: int = 0,
    split: str = "train",
    image_root: str | None = None,
) -> list[dict[str, Any]]:
    """Target-task batches (``labels`` = -100 except answer tokens); errors when no answer token is left."""
    from emtbench.methods.finetune.data import ConversationCollator, load_conversations

    rows = load_conversations(spec, image_root=image_root, split=split, limit=samples, seed=seed)
    collator = ConversationCollator(processor)
    batches = [
        collator([rows[index] for index in range(start, min(start + batch_size, len(rows)))])
        for start in progress_bar(range(0, len(rows), batch_size), desc=f"calibration {spec}", unit="batch")
    ]
    check_target_tokens(batches, spec)
    return batches


def check_target_tokens(batches: Sequence[dict[str, Any]], spec: str) -> None:
    """Calibration must be *target-task* data: at least one answer token to fit."""
    from emtbench.methods.finetune.data import IGNORE_INDEX

    targets = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in batches)
    if targets == 0:
        raise EmtbenchError(
            "the calibration data has no target (answer) tokens",
            where=f"--calib-data {spec}",
            fix="use conversations with non-empty assistant answers (e.g. emt:digits or a LLaVA JSON)",
        )


def frozen_prefixes(model, copy_finetuned: Sequence[str]) -> dict[str, str]:
    """Module prefixes of the parts that stay pre-trained (all of :data:`FROZEN_PARTS` not copied)."""
    from emtbench.methods.fusion.driver import fusion_layout

    parts = fusion_layout(model).frozen_parts
    return {part: prefix for part, prefix in parts.items() if part not in copy_finetuned}


def copy_finetuned_parts(
    model, finetuned: Sequence[Mapping[str, torch.Tensor]], parts: Sequence[str]
) -> list[str]:
    """Set the named parts to the (mean) fine-tuned values; returns the parameter names changed."""
    from emtbench.methods.fusion.driver import fusion_layout

    layout = fusion_layout(model).frozen_parts
    changed = []
    with torch.no_grad():
        for part in parts:
            if part not in layout:
                raise EmtbenchError(
                    f"this model has no {part!r} part",
                    where="--copy-finetuned",
                    fix=f"use {', '.join(layout)}",
                )
            prefix = layout[part]
            for name, parameter in model.named_parameters():
                if name == prefix or name.startswith(prefix + "."):
                    mean = torch.stack([state[name].float() for state in finetuned]).mean(dim=0)
                    if not torch.equal(mean.to(parameter.dtype), parameter):
                        parameter.copy_(mean)
                        changed.append(name)
    return changed


def changed_fraction(
    model, pretrained_state: Mapping[str, torch.Tensor], known: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """How many parameters differ from pre-trained, overall and per parameter tensor that changed.

    ``known``: counts the fusion already took when it wrote those parameters (their pre-trained
    values are then not read again)."""
    total = changed = 0
    per_tensor = {}
    known = known or {}
    for name, parameter in model.named_parameters():
        if name in known:
            different = known[name]
        else:
            different = int((parameter.detach() != pretrained_state[name]).sum())
        total += parameter.numel()
        changed += different
        if different:
            per_tensor[name] = different / parameter.numel()
    return {"changed": changed, "total": total, "changed_fraction": changed / total, "per_tensor": per_tensor}


def tensors_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and values (``b`` compared in ``a``'s dtype)."""
    return a.shape == b.shape and bool(torch.equal(a, b.to(a.dtype)))
