"""``emtbench.finetune``: load the data, train, and write the finished model folder atomically."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from emtbench.methods.finetune.options import FinetuneOptions, FinetuneResult, TrainSettings
from emtbench.methods.finetune.prepare import check_architecture
from emtbench.methods.finetune.rehearsal import build_training_data
from emtbench.methods.finetune.saving import save_result
from emtbench.methods.finetune.trainer import train


def default_checkpoint_dir(output: Path) -> Path:
    """Trainer checkpoints live next to the output, so ``--resume`` finds them after an interruption."""
    return output.parent / f".{output.name}.checkpoints"


def run_record(
    *,
    settings: TrainSettings,
    model_path: str,
    data: dict[str, Any],
    parameters: dict[str, Any] | None = None,
    train_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "method": settings.method,
        "settings": settings.record(),
        "data": data,
        "seed": settings.training.seed,
        "base_model": model_path,
    }
    if settings.keep_adapter:
        record["load_with"] = f"hf-multimodal: --model_args pretrained={model_path},peft=<this folder>"
    if parameters is not None:
        record["parameters"] = parameters
    if train_metrics:
        record["training"] = train_metrics
    return record


def write_snapshots(options: FinetuneOptions, result: Any, record: dict[str, Any]) -> list[Path]:
    """Each ``--snapshot-steps`` model as a full folder ``OUTPUT-stepN`` (LoRA merged, like OUTPUT).

    Its run record is the run's, with ``parameters`` counted on the snapshot and ``snapshot``
    naming its step and the run's folder; ``training`` holds only ``global_step``.
    """
    from emtbench.core.records import write_model_dir
    from emtbench.hub.cards import model_card
    from emtbench.methods.finetune.saving import load_trained

    written = []
    reference = result.reference  # train() loaded it for the final rebuild whenever there are snapshots
    result.reference = None  # freed with the last snapshot
    for step, folder in sorted(result.snapshots.items()):
        model, parameters = load_trained(folder, options.model, options.settings, reference=reference)
        snapshot_record = {
            **record,
            "parameters": {"trained": result.parameters.get("trained"), **parameters},
            "training": {"global_step": step},
            "snapshot": {"step": step, "of": str(options.output)},
        }

        def save(staging: Path, model: Any = model) -> None:
            model.save_pretrained(staging)
            result.processor.save_pretrained(staging)

        target = options.snapshot_output(step)
        write_model_dir(target, save, snapshot_record, overwrite=options.overwrite, card=model_card)
        written.append(target)
        del model
    return written


def finetune_options(**values: Any) -> FinetuneOptions:
    """:class:`FinetuneOptions` from flat keyword arguments: its own fields, the rest go to :meth:`TrainSettings.of`."""
    own = {f.name for f in dataclasses.fields(FinetuneOptions)} - {"settings"}
    settings = values.pop("settings", None)
    rest = {k: values.pop(k) for k in list(values) if k not in own}
    if settings is None:
        settings = TrainSettings.of(**rest)
    elif rest:
        raise TypeError(f"give settings= or the setting keywords {sorted(rest)}, not both")
    return FinetuneOptions(settings=settings, **values)


def finetune(options: FinetuneOptions | None = None, /, **values: Any) -> FinetuneResult:
    """Fine-tune a multimodal LLM with one of the continual-learning paper's methods.

    Pass a :class:`FinetuneOptions` or its fields as keywords, with the method's settings flat. Example::

        import emtbench
        result = emtbench.finetune(
            model="llava-hf/llava-1.5-7b-hf", data="emt:cifar10", output="out/llava-msgm",
            method="msgm", epochs=1, bf16=True, rehearsal_data=["emt:mnist"],
        )
        print(result.output, result.parameters["changed_fraction"])

    The folder (safetensors or a peft adapter, processor, ``emtbench_run.json``, model card) appears only
    when everything succeeded; under ``accelerate launch`` only the main process writes it.
    """
    from accelerate import PartialState

    from emtbench.core.records import check_output_dir, write_model_dir
    from emtbench.hub.cards import model_card

    if options is None:
        options = finetune_options(**values)
    elif values:
        raise TypeError("give a FinetuneOptions or keyword arguments, not both")
    settings = options.settings
    output = options.output
    rehearsal_specs = list(options.rehearsal_data)
    settings.resolve(check_architecture(options.model))
    data_info = {
        "train": options.data,
        "rehearsal": rehearsal_specs,
        "rehearsal_fraction": options.rehearsal_fraction if rehearsal_specs else None,
        "image_root": options.image_root,
        "limit": options.limit,
        "train_prompt": options.train_prompt,
    }
    record = run_record(settings=settings, model_path=options.model, data=data_info)
    check_output_dir(output, record, overwrite=options.overwrite)  # fail before any training
    if options.push_to_hub:
        from emtbench.hub.calls import check_credentials

        check_credentials(options.push_to_hub)  # a missing or bad token fails now, not after training
    train_data, counts = build_training_data(
        options.data,
        rehearsal_specs=rehearsal_specs,
        rehearsal_fraction=options.rehearsal_fraction,
        image_root=options.image_root,
        limit=options.limit,
        seed=settings.training.seed,
        prompt=options.train_prompt,
    )
    data_info["examples"] = counts
    checkpoints = Path(options.checkpoint_dir) if options.checkpoint_dir else default_checkpoint_dir(output)
    for step in options.snapshot_steps:
        check_output_dir(options.snapshot_output(step), record, overwrite=options.overwrite)
    result = train(
        options.model,
        train_data,
        settings,
        checkpoint_dir=checkpoints,
        resume=options.resume,
        snapshot_steps=options.snapshot_steps,
    )
    record = run_record(
        settings=settings,
        model_path=options.model,
        data=data_info,
        parameters=result.parameters or None,  # counted on the main process only
        train_metrics=result.train_metrics,
    )
    distributed = PartialState()  # under `accelerate launch` only the main process writes the folder
    hub_url = None
    if distributed.is_main_process:
        # Snapshots first: a finished OUTPUT then means every snapshot next to it is there too.
        write_snapshots(options, result, record)
        write_model_dir(
            output,
            lambda staging: save_result(result, staging),
            record,
            overwrite=options.overwrite,
            card=model_card,
        )
        if not options.keep_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    distributed.wait_for_everyone()
    if distributed.is_main_process and options.push_to_hub:
        from emtbench.hub.push import push_to_hub

        hub_url = push_to_hub(output, options.push_to_hub, private=options.private)
    return FinetuneResult(output, record, hub_url)
