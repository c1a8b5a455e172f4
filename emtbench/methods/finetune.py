"""Fine-tuning with the forgetting mitigations of the continual-learning paper (SPEC §3).

Methods (the vision tower is always frozen):

* ``linear`` — projector only.
* ``full`` — projector + language model (naive fine-tuning).
* ``lora`` — projector + LoRA on every linear layer of the language model except the output head
  (rank = hidden/2, alpha 8, rsLoRA, dropout 0.05, no bias); merged into the weights unless the
  adapter is kept.
* ``soft`` — ``full`` with the soft-target loss (α = 0.01 by default).
* ``msgm`` — ``lora`` with the soft-target loss.

Training runs on transformers' ``Trainer`` (bf16, gradient accumulation, gradient checkpointing,
checkpoints and resume, progress bars); the soft-target loss is plugged in through
``Trainer(compute_loss_func=...)``. Multi-GPU and sharded training use ``accelerate launch`` with the
ordinary accelerate/FSDP/DeepSpeed configs (see :data:`MULTI_GPU_HELP`).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.methods.data import IGNORE_INDEX, ConversationCollator, load_conversations
from emtbench.models.parts import model_parts, part_paths

logger = logging.getLogger(__name__)

METHODS: dict[str, tuple[str, bool]] = {
    "full": ("full", False),
    "linear": ("linear", False),
    "lora": ("lora", False),
    "soft": ("full", True),
    "msgm": ("lora", True),
}
"""Method name → (which parameters train, whether the soft-target loss is used)."""

DEFAULT_LEARNING_RATES = {"full": 2e-5, "lora": 2e-4, "linear": 1e-3}
"""LLaVA-1.5's learning rates for full fine-tuning, LoRA and projector-only training."""

DEFAULT_ALPHA = 0.01
"""Soft-target α that the continual-learning paper found best (SPEC §3)."""

MULTI_GPU_HELP = """\
Multi-GPU / sharded training: run the same command under `accelerate launch`; the Trainer picks up the
distributed setup and FSDP / DeepSpeed ZeRO-3 come from accelerate's own config files (ready-made ones
in examples/accelerate/, explained in docs/training.md):
  accelerate launch --multi_gpu --num_processes 8 -m emtbench.cli finetune --model llava-hf/llava-1.5-7b-hf \\
      --method lora --data emt:cifar10 --bf16 --output out/llava-lora-cifar10
  accelerate launch --config_file examples/accelerate/fsdp.yaml -m emtbench.cli finetune --method full ...
  accelerate launch --config_file examples/accelerate/deepspeed_zero3.yaml -m emtbench.cli finetune ...
The final weights are gathered through Trainer.save_model and written by the main process only (LoRA
merged on CPU from the saved adapter); ZeRO-3 needs zero3_save_16bit_model: true."""


@dataclass
class TrainSettings:
    """Everything that determines a fine-tuning run; recorded in ``emtbench_run.json``."""

    method: str = "lora"
    alpha: float | None = None
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float | None = None
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    bf16: bool = False
    gradient_checkpointing: bool = False
    seed: int = 0
    lora_rank: int | None = None
    lora_alpha: float = 8.0
    lora_dropout: float = 0.05
    use_rslora: bool = True
    keep_adapter: bool = False
    save_steps: int = 500
    logging_steps: int = 10

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EmtbenchError(
                f"unknown method {self.method!r}",
                where="--method",
                fix=f"use one of: {', '.join(METHODS)}",
            )
        uses_soft = METHODS[self.method][1]
        if self.alpha is None:
            self.alpha = DEFAULT_ALPHA if uses_soft else 0.0
        elif not uses_soft and self.alpha != 0.0:
            raise EmtbenchError(
                f"--alpha only applies to the soft-target methods, not {self.method!r}",
                where="--alpha",
                fix="use --method soft (full + soft targets) or --method msgm (LoRA + soft targets)",
            )
        if not 0.0 <= self.alpha < 1.0:
            raise EmtbenchError(f"alpha must be in [0, 1), got {self.alpha}", where="--alpha")
        if self.keep_adapter and self.base_method != "lora":
            raise EmtbenchError(
                "--keep-adapter only applies to LoRA methods",
                where="--keep-adapter",
                fix="use --method lora or msgm",
            )
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise EmtbenchError(f"{name} must be at least 1", where=f"--{name.replace('_', '-')}")
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LEARNING_RATES[self.base_method]
        if self.max_steps <= 0 and self.epochs <= 0:
            raise EmtbenchError("train for some epochs or steps", where="--epochs/--max-steps")

    def resolve(self, config) -> None:
        """Fill defaults that depend on the model: LoRA rank = hidden size / 2 (SPEC §3)."""
        if self.base_method == "lora" and self.lora_rank is None:
            self.lora_rank = max(1, config.get_text_config().hidden_size // 2)
        if self.lora_rank is not None and self.lora_rank < 1:
            raise EmtbenchError(f"LoRA rank must be at least 1, got {self.lora_rank}", where="--lora-rank")

    @property
    def base_method(self) -> str:
        return METHODS[self.method][0]

    @property
    def soft_targets(self) -> bool:
        return METHODS[self.method][1]


# --- loss --------------------------------------------------------------------------------------


def soft_target_loss(logits, labels, alpha: float, num_items_in_batch=None):
    """Cross-entropy against (1−α) on the target token and α/(V−1) on every other token (SPEC §3).

    ``logits`` are the model's (batch, seq, V) outputs and ``labels`` the unshifted labels (-100 =
    ignore). The sum over valid tokens is divided by their number (or by ``num_items_in_batch``, the
    Trainer's count across gradient-accumulation steps), so α = 0 is exactly the model's own
    cross-entropy; the paper's released code divides by all positions instead.
    """
    import torch

    shift_logits = logits[..., :-1, :].float()
    shift_labels = labels[..., 1:].to(shift_logits.device)
    valid = shift_labels != IGNORE_INDEX
    log_probs = torch.log_softmax(shift_logits[valid], dim=-1)
    targets = shift_labels[valid]
    vocab = log_probs.shape[-1]
    target_log_prob = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    off_target_weight = alpha / (vocab - 1)
    per_token = -(1.0 - alpha - off_target_weight) * target_log_prob - off_target_weight * log_probs.sum(-1)
    count = num_items_in_batch if num_items_in_batch is not None else valid.sum()
    if isinstance(count, torch.Tensor):
        count = count.to(per_token.device)
    return per_token.sum() / count


def make_compute_loss_func(alpha: float) -> Callable:
    """The ``Trainer(compute_loss_func=...)`` hook for the soft-target loss."""

    def compute_loss(outputs, labels, num_items_in_batch=None):
        return soft_target_loss(outputs.logits, labels, alpha, num_items_in_batch)

    return compute_loss


# --- model -------------------------------------------------------------------------------------


def check_architecture(model_path: str):
    """Fail on an unsupported architecture before any weights are loaded; return the config."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise EmtbenchError(
            f"cannot read a model config from {model_path!r} ({error})",
            where="--model",
            fix="pass a Hugging Face model folder (with config.json) or a Hub id",
        ) from None
    architectures = getattr(config, "architectures", None) or [type(config).__name__]
    part_paths(architectures[0])
    return config


def load_model_and_processor(model_path: str):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    check_architecture(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
    part_paths(model)
    processor = AutoProcessor.from_pretrained(model_path)
    return model, processor


def language_linear_names(model) -> list[str]:
    """Full names of every ``nn.Linear`` in the language model (the output head lives outside it)."""
    from torch import nn

    paths = part_paths(model)
    prefix = paths.language_model + "."
    return [
        name
        for name, module in model.named_modules()
        if name.startswith(prefix) and isinstance(module, nn.Linear) and not name.endswith(paths.lm_head)
    ]


def prepare_model(model, settings: TrainSettings):
    """Freeze/unfreeze parts for the method; wrap in peft LoRA for the LoRA methods."""
    parts = model_parts(model)
    model.requires_grad_(False)
    for projector in parts.projectors:
        projector.requires_grad_(True)
    if settings.base_method == "full":
        parts.language_model.requires_grad_(True)
        parts.lm_head.requires_grad_(True)
    elif settings.base_method == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise EmtbenchError(
                "LoRA methods need the peft package", fix="pip install 'emtbench[train]'"
            ) from None

        settings.resolve(model.config)
        config = LoraConfig(
            r=settings.lora_rank,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            use_rslora=settings.use_rslora,
            bias="none",
            target_modules=language_linear_names(model),
            # The projector trains fully; saving it with the adapter keeps --keep-adapter complete.
            modules_to_save=list(parts.paths.projector),
        )
        model = get_peft_model(model, config)
    return model


def trainable_count(model) -> int:
    return sum(parameter_count(p) for p in model.parameters() if p.requires_grad)


def parameter_count(parameter) -> int:
    """Values in a parameter; under DeepSpeed ZeRO-3 the local tensor is an empty shard, ``ds_numel`` is full."""
    return int(getattr(parameter, "ds_numel", parameter.numel()))


def changed_counts(model, reference) -> tuple[int, int]:
    """(values that differ from ``reference``, all parameter values) of a merged model.

    Both models are plain, unsharded (CPU) models, so this works whatever sharding training used.
    """
    before = dict(reference.named_parameters())
    changed = 0
    total = 0
    for name, param in model.named_parameters():
        total += param.numel()
        base = before.get(name)
        if base is not None and base.shape == param.shape:
            changed += int((param.detach() != base.detach().to(param.device, param.dtype)).sum())
    return changed, total


# --- data --------------------------------------------------------------------------------------


def rehearsal_sample(data, fraction: float, seed: int):
    """A seeded random ``fraction`` of ``data`` (at least one example) for rehearsal."""
    if not 0.0 < fraction <= 1.0:
        raise EmtbenchError(
            f"rehearsal fraction must be in (0, 1], got {fraction}", where="--rehearsal-fraction"
        )
    count = min(len(data), max(1, round(fraction * len(data))))
    return data.select(sorted(random.Random(seed).sample(range(len(data)), count)))


def build_training_data(
    data_spec: str,
    *,
    rehearsal_specs: Sequence[str] = (),
    rehearsal_fraction: float = 0.01,
    image_root: str | None = None,
    limit: int | None = None,
    seed: int = 0,
):
    """The current task's conversations plus a seeded share of every rehearsal task's."""
    import datasets

    current = load_conversations(data_spec, image_root=image_root, limit=limit, seed=seed)
    parts = [current]
    counts = {data_spec: len(current)}
    for index, spec in enumerate(rehearsal_specs):
        earlier = load_conversations(spec, image_root=image_root, limit=limit, seed=seed)
        chosen = rehearsal_sample(earlier, rehearsal_fraction, seed + 1 + index)
        parts.append(chosen)
        counts[f"rehearsal:{spec}"] = len(chosen)
    mixed = datasets.concatenate_datasets(parts) if len(parts) > 1 else current
    return mixed.shuffle(seed=seed) if len(parts) > 1 else mixed, counts


# --- training ----------------------------------------------------------------------------------

FINAL_DIR = "final"
"""Folder inside the checkpoint folder where ``Trainer.save_model`` writes the gathered final weights."""


@dataclass
class TrainResult:
    model: Any
    """The trained model on CPU (a peft model with ``keep_adapter``); ``None`` on non-main processes."""
    processor: Any
    parameters: dict[str, Any]
    train_metrics: dict[str, Any] = field(default_factory=dict)


def training_arguments(settings: TrainSettings, checkpoint_dir: Path):
    """The Trainer's arguments. Built before the model is loaded so DeepSpeed ZeRO-3 can partition at load."""
    import torch
    from transformers import TrainingArguments

    use_bf16 = settings.bf16
    if use_bf16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise EmtbenchError("this GPU does not support bf16", where="--bf16", fix="drop --bf16")
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    fields = TrainingArguments.__dataclass_fields__
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    )
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=settings.weight_decay,
        lr_scheduler_type=settings.lr_scheduler,
        bf16=use_bf16,
        use_cpu=use_bf16 and not torch.cuda.is_available(),  # CPU bf16 autocast must be asked for explicitly
        **{
            checkpointing: settings.gradient_checkpointing,
            f"{checkpointing}_kwargs": {"use_reentrant": False} if settings.gradient_checkpointing else None,
        },
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=1,
        seed=settings.seed,
        data_seed=settings.seed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def train(
    model_path: str,
    train_data,
    settings: TrainSettings,
    *,
    checkpoint_dir: Path,
    resume: bool = False,
) -> TrainResult:
    """Train ``model_path`` on ``train_data``; return the (merged unless keep_adapter) model.

    Under ``accelerate launch`` every process calls this; the final weights are saved through
    ``Trainer.save_model`` (which gathers FSDP / ZeRO-3 shards) and only the main process rebuilds the
    trained model from them on CPU (see :func:`save_trained` and :func:`load_trained`).
    """
    import gc

    import torch
    from accelerate import PartialState
    from transformers import set_seed

    checkpoint_dir = Path(checkpoint_dir)
    args = training_arguments(settings, checkpoint_dir)
    model, processor = load_model_and_processor(model_path)
    set_seed(settings.seed)  # LoRA's random init: the same --seed gives the same run, resumed or not
    model = prepare_model(model, settings)
    trained = trainable_count(model)
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_data,
        data_collator=ConversationCollator(processor),
        compute_loss_func=make_compute_loss_func(settings.alpha) if settings.soft_targets else None,
    )
    resume_from = resume and _last_checkpoint(checkpoint_dir)
    output = trainer.train(resume_from_checkpoint=resume_from or None)
    final_dir = checkpoint_dir / FINAL_DIR
    save_trained(trainer, final_dir)
    metrics = {k: v for k, v in output.metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
    metrics["global_step"] = output.global_step
    del trainer, model  # free the (GPU) training copy before rebuilding the result on CPU
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not PartialState().is_main_process:
        return TrainResult(None, processor, {}, metrics)
    model, parameters = load_trained(final_dir, model_path, settings)
    return TrainResult(model, processor, {"trained": trained, **parameters}, metrics)


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


def load_trained(directory: Path, model_path: str, settings: TrainSettings) -> tuple[Any, dict[str, Any]]:
    """Rebuild the trained model on CPU from what :func:`save_trained` wrote; count changed values.

    LoRA merging needs whole weights, which FSDP and ZeRO-3 never hold on one process; the saved
    adapter applied to the base model loaded on CPU is exactly the trained model, on any setup.
    Host memory: the base model (reference for the changed count) plus the result (plus a merged copy
    with ``keep_adapter``).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    lora = settings.base_method == "lora"
    found = (directory / "adapter_config.json").is_file() if lora else (directory / "config.json").is_file()
    weights = any(directory.glob("*.safetensors")) or any(directory.glob("*.bin"))
    if not (found and weights):
        raise EmtbenchError(
            f"the Trainer saved no consolidated weights in {directory}",
            where="final save",
            fix="under DeepSpeed ZeRO-3 set zero3_save_16bit_model: true in the accelerate config "
            "(stage3_gather_16bit_weights_on_model_save in a DeepSpeed JSON); see docs/training.md",
        )
    reference = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
    if lora:
        from peft import PeftModel

        base = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
        adapter = PeftModel.from_pretrained(base, str(directory))
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


def warmup_scheduler(
    optimizer,
    name: str,
    *,
    warmup_steps: int,
    total_steps: int,
    scheduler_kwargs: dict[str, Any] | None = None,
):
    """transformers' schedule ``name`` whose linear warm-up starts at lr/(W+1) instead of 0.

    The stock warm-up scales step ``s`` by s/W, so the first optimizer step always runs at lr 0: with
    the 0.03 warm-up ratio a 1-step run changed nothing. Here step ``s < W`` runs at (s+1)/(W+1) of the
    peak and the schedule after the warm-up is transformers' own. Returns ``None`` (use the stock
    scheduler) when the schedule has no warm-up that starts at zero (``constant``, plateau, ...).
    """
    import torch
    from torch.optim.lr_scheduler import LambdaLR
    from transformers import get_scheduler

    if warmup_steps <= 0:
        return None
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    stock = get_scheduler(
        name,
        probe,
        num_warmup_steps=warmup_steps,
        num_training_steps=total_steps,
        scheduler_specific_kwargs=scheduler_kwargs or {},
    )
    if not isinstance(stock, LambdaLR) or len(stock.lr_lambdas) != 1 or stock.lr_lambdas[0](0) != 0.0:
        return None
    after_warmup = stock.lr_lambdas[0]

    def factor(step: int) -> float:
        return (step + 1) / (warmup_steps + 1) if step < warmup_steps else after_warmup(step)

    return LambdaLR(optimizer, factor)


def make_trainer_class():
    """``Trainer`` with two fixes: resume of full-model checkpoints, and a warm-up whose first step learns.

    transformers 5 saves LLaVA checkpoints in the original (Hub) key layout but the stock Trainer
    resume calls ``load_state_dict`` on the raw file without converting the keys back, so every weight
    is silently skipped (a missing-keys warning) and training would restart from the base weights.
    Loading through ``from_pretrained`` applies the model's key mapping. PEFT adapters, FSDP and
    DeepSpeed checkpoints keep the stock path. The scheduler is :func:`warmup_scheduler`.
    """
    from transformers import Trainer

    class CheckpointConvertingTrainer(Trainer):
        def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
            target = model if model is not None else self.model
            if hasattr(target, "peft_config") or self.is_fsdp_enabled or self.is_deepspeed_enabled:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            saved = type(target).from_pretrained(
                resume_from_checkpoint, dtype=next(target.parameters()).dtype
            )
            target.load_state_dict(saved.state_dict(), strict=True)

        def create_scheduler(self, num_training_steps: int, optimizer=None):
            if self.lr_scheduler is None:
                scheduler = warmup_scheduler(
                    optimizer if optimizer is not None else self.optimizer,
                    self.args.lr_scheduler_type,
                    warmup_steps=self.args.get_warmup_steps(num_training_steps),
                    total_steps=num_training_steps,
                    scheduler_kwargs=self.args.lr_scheduler_kwargs,
                )
                if scheduler is not None:
                    self.lr_scheduler = scheduler
                    self._created_lr_scheduler = True  # as the stock method does: rebuilt per train()
            return super().create_scheduler(num_training_steps, optimizer)

    return CheckpointConvertingTrainer


def _last_checkpoint(checkpoint_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not checkpoint_dir.is_dir():
        return None
    found = get_last_checkpoint(str(checkpoint_dir))
    if found:
        logger.info("resuming from %s", found)
    return found


def default_checkpoint_dir(output: Path) -> Path:
    """Trainer checkpoints live next to the output, so ``--resume`` finds them after an interruption."""
    return output.parent / f".{output.name}.checkpoints"


def save_result(result: TrainResult, staging: Path) -> None:
    """The ``write_model_dir`` save step: safetensors model (or peft adapter) plus processor."""
    result.model.save_pretrained(staging)
    result.processor.save_pretrained(staging)


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
        "settings": asdict(settings),
        "data": data,
        "seed": settings.seed,
        "base_model": model_path,
    }
    if settings.keep_adapter:
        record["load_with"] = f"hf-multimodal: --model_args pretrained={model_path},peft=<this folder>"
    if parameters is not None:
        record["parameters"] = parameters
    if train_metrics:
        record["training"] = train_metrics
    return record


def finetune(
    model_path: str,
    data_spec: str,
    output: str | Path,
    settings: TrainSettings,
    *,
    rehearsal_specs: Sequence[str] = (),
    rehearsal_fraction: float = 0.01,
    image_root: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    checkpoint_dir: str | Path | None = None,
    keep_checkpoints: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Load data, train, and write the finished model folder atomically; return it and its record."""
    from emtbench.core.records import check_output_dir, write_model_dir
    from emtbench.hub.cards import model_card

    output = Path(output)
    settings.resolve(check_architecture(model_path))
    data_info = {
        "train": data_spec,
        "rehearsal": list(rehearsal_specs),
        "rehearsal_fraction": rehearsal_fraction if rehearsal_specs else None,
        "image_root": image_root,
        "limit": limit,
    }
    record = run_record(settings=settings, model_path=model_path, data=data_info)
    check_output_dir(output, record, overwrite=overwrite)  # fail before any training
    train_data, counts = build_training_data(
        data_spec,
        rehearsal_specs=rehearsal_specs,
        rehearsal_fraction=rehearsal_fraction,
        image_root=image_root,
        limit=limit,
        seed=settings.seed,
    )
    data_info["examples"] = counts
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(output)
    result = train(model_path, train_data, settings, checkpoint_dir=checkpoints, resume=resume)
    record = run_record(
        settings=settings,
        model_path=model_path,
        data=data_info,
        parameters=result.parameters or None,  # counted on the main process only
        train_metrics=result.train_metrics,
    )
    from accelerate import PartialState

    distributed = PartialState()  # under `accelerate launch` only the main process writes the folder
    if distributed.is_main_process:
        write_model_dir(
            output,
            lambda staging: save_result(result, staging),
            record,
            overwrite=overwrite,
            card=model_card,
        )
        if not keep_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    distributed.wait_for_everyone()
    return output, record
