"""The final save of a training run and the trained model rebuilt from it, on any distributed setup."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emtbench.core.errors import EmtbenchError
from emtbench.methods.finetune.prepare import changed_counts

if TYPE_CHECKING:
    from emtbench.methods.finetune.options import TrainSettings
    from emtbench.methods.finetune.trainer import TrainResult

TRAINER_STATE_FILE = "trainer_state.json"
"""The Trainer's state (log history, steps, best metric) the output folder keeps."""
FINAL_DIR = "final"
"""Folder inside the checkpoint folder where ``Trainer.save_model`` writes the gathered final weights."""


def save_trained(trainer, directory: Path) -> None:
    """Write the final weights with ``trainer.save_model``; every process must call this.

    The Trainer knows how to gather each setup's weights: plain ``save_pretrained`` on one process,
    ``accelerator.get_state_dict`` (a full state dict on the main process) under FSDP, and the
    consolidated 16-bit state dict under DeepSpeed ZeRO-3 (only the trainable adapter and projector
    for peft models). A peft model is saved as its adapter; merging happens later, on CPU, in
    :func:`load_trained`. Only the main process writes files.
    """
    accelerator = trainer.accelerator
    if accelerator.is_main_process and directory.exists():
        shutil.rmtree(directory)  # a leftover from an interrupted run must not mix with this save
    accelerator.wait_for_everyone()
    if trainer.is_fsdp_enabled:
        # save_model writes nothing for a sharded state-dict type; the final save is always gathered.
        accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(directory))
    accelerator.wait_for_everyone()


def load_reference(model_path: str):
    """The base model in fp32 on CPU: what :func:`load_trained` counts changes against and merges into."""
    import torch
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)


def load_trained(
    directory: Path, model_path: str, settings: TrainSettings, *, reference: Any = None
) -> tuple[Any, dict[str, Any]]:
    """Rebuild the trained model on CPU from what :func:`save_trained` wrote; count changed values.

    LoRA merging needs whole weights, which FSDP and ZeRO-3 never hold on one process; the saved
    adapter applied to the base model loaded on CPU is exactly the trained model, on any setup.
    ``reference`` is :func:`load_reference` of ``model_path`` when the caller rebuilds several saves
    (the snapshots) and loads it once; it is only read, and the adapter is merged into a copy of it.
    Host memory: the base model (reference for the changed count) plus the result (plus a merged copy
    with ``keep_adapter``).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    lora = settings.method_object.saves_adapter
    found = (directory / "adapter_config.json").is_file() if lora else (directory / "config.json").is_file()
    weights = any(directory.glob("*.safetensors")) or any(directory.glob("*.bin"))
    if not (found and weights):
        raise EmtbenchError(
            f"the Trainer saved no consolidated weights in {directory}",
            where="final save",
            fix="under DeepSpeed ZeRO-3 set zero3_save_16bit_model: true in the accelerate config "
            "(stage3_gather_16bit_weights_on_model_save in a DeepSpeed JSON); see docs/training.md",
        )
    if reference is None:
        reference = load_reference(model_path)
    if lora:
        from peft import PeftModel

        # low_cpu_mem_usage: the adapter's tensors are created empty and filled from the file, not
        # randomly initialised first (~0.6 s of kaiming init per rank-288 flagship adapter, py-spy).
        adapter = PeftModel.from_pretrained(copy.deepcopy(reference), str(directory), low_cpu_mem_usage=True)
        if settings.keep_adapter:
            result, merged = adapter, copy.deepcopy(adapter).merge_and_unload()
        else:
            result = merged = adapter.merge_and_unload()
    else:
        result = merged = AutoModelForImageTextToText.from_pretrained(str(directory), dtype=torch.float32)
    changed, total = changed_counts(merged, reference)
    del reference, merged
    result.eval()
    return result, {"total": total, "changed": changed, "changed_fraction": changed / total if total else 0.0}


def save_result(result: TrainResult, staging: Path) -> None:
    """The ``write_model_dir`` save step: safetensors model (or peft adapter), processor, training logs."""
    result.model.save_pretrained(staging)
    result.processor.save_pretrained(staging)
    for path in getattr(result, "logs", ()):
        if path.is_dir():
            shutil.copytree(path, staging / path.name, dirs_exist_ok=True)
        elif path.is_file():
            shutil.copy2(path, staging / path.name)
