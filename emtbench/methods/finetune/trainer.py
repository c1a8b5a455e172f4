"""Training on transformers' ``Trainer``: its arguments, a warm-up whose first step learns, and resume.

bf16, gradient accumulation, gradient checkpointing, checkpoints and resume, and progress bars are the
Trainer's; multi-GPU and sharded training come from ``accelerate launch`` with accelerate's own
FSDP/DeepSpeed configs (docs/training.md).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emtbench.core.errors import EmtbenchError
from emtbench.methods.finetune.data import ConversationCollator
from emtbench.methods.finetune.prepare import load_model_and_processor, prepare_model, trainable_count
from emtbench.methods.finetune.saving import (
    FINAL_DIR,
    TRAINER_STATE_FILE,
    load_reference,
    load_trained,
    save_trained,
)

if TYPE_CHECKING:
    from emtbench.methods.finetune.options import TrainSettings

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: Any
    """The trained model on CPU (a peft model with ``keep_adapter``); ``None`` on non-main processes."""
    processor: Any
    parameters: dict[str, Any]
    train_metrics: dict[str, Any] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)
    """Files and folders the output keeps from training: ``trainer_state.json`` (the log history) and
    the TensorBoard ``runs/`` folder (with ``--report-to tensorboard``)."""
    snapshots: dict[int, Path] = field(default_factory=dict)
    """Optimizer step -> what :func:`save_trained` wrote after it (``snapshot_steps``; main process)."""
    reference: Any = None
    """With snapshots: the base model :func:`load_trained` rebuilt the final model against, kept so the
    snapshots are rebuilt against it too instead of loading it again (drop it when done)."""


def snapshot_dir(checkpoint_dir: Path, step: int) -> Path:
    return Path(checkpoint_dir) / f"snapshot-{step}"


def snapshot_callback(steps: list[int], checkpoint_dir: Path):
    """A ``TrainerCallback`` that saves the model (as the final save does) after each of ``steps``.

    Saved inside the checkpoint folder, so a resumed run still finds the snapshots an earlier session
    took; the final model is rebuilt from each by :func:`load_trained` after training.
    """
    from transformers import TrainerCallback

    class SnapshotCallback(TrainerCallback):
        trainer = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in steps and self.trainer is not None:
                save_trained(self.trainer, snapshot_dir(checkpoint_dir, state.global_step))
            return control

    return SnapshotCallback()


def training_arguments(settings: TrainSettings, checkpoint_dir: Path):
    """The Trainer's arguments. Built before the model is loaded so DeepSpeed ZeRO-3 can partition at load."""
    import torch
    from transformers import TrainingArguments

    from emtbench.core.progress import progress_enabled
    from emtbench.methods.finetune.trainer_args import report_to_list

    training = settings.training
    use_bf16 = training.bf16
    if use_bf16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise EmtbenchError("this GPU does not support bf16", where="--bf16", fix="drop --bf16")
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    fields = TrainingArguments.__dataclass_fields__
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    )
    arguments = dict(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=training.grad_accum,
        num_train_epochs=training.epochs,
        max_steps=training.max_steps,
        learning_rate=training.learning_rate,
        warmup_steps=training.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=training.weight_decay,
        lr_scheduler_type=training.lr_scheduler,
        bf16=use_bf16,
        use_cpu=use_bf16 and not torch.cuda.is_available(),  # CPU bf16 autocast must be asked for explicitly
        **{
            checkpointing: training.gradient_checkpointing,
            f"{checkpointing}_kwargs": {"use_reentrant": False} if training.gradient_checkpointing else None,
        },
        logging_steps=training.logging_steps,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=1,
        seed=training.seed,
        data_seed=training.seed,
        report_to=report_to_list(training.report_to),
        disable_tqdm=not progress_enabled(),
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    # Further TrainingArguments fields (--max_grad_norm 0.5, --save_strategy epoch, ...) as given;
    # those emtbench has flags for were refused by name when the options were made.
    return TrainingArguments(**{**arguments, **training.trainer_args})


def train(
    model_path: str,
    train_data,
    settings: TrainSettings,
    *,
    checkpoint_dir: Path,
    resume: bool = False,
    snapshot_steps: list[int] | None = None,
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
    set_seed(settings.training.seed)  # LoRA's random init: the same --seed gives the same run, resumed or not
    model = prepare_model(model, settings)
    trained = trainable_count(model)
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_data,
        data_collator=ConversationCollator(processor),
        compute_loss_func=settings.method_object.compute_loss_func(settings.options),
    )
    snapshot_steps = sorted(snapshot_steps or [])
    if snapshot_steps:
        callback = snapshot_callback(snapshot_steps, checkpoint_dir)
        callback.trainer = trainer
        trainer.add_callback(callback)
    resume_from = resume and _last_checkpoint(checkpoint_dir)
    output = trainer.train(resume_from_checkpoint=resume_from or None)
    final_dir = checkpoint_dir / FINAL_DIR
    save_trained(trainer, final_dir)
    logs = []
    if trainer.is_world_process_zero():
        trainer.state.save_to_json(str(final_dir / TRAINER_STATE_FILE))  # the whole log history
        logs.append(final_dir / TRAINER_STATE_FILE)
        if (checkpoint_dir / "runs").is_dir():
            logs.append(checkpoint_dir / "runs")  # TensorBoard's event files (--report-to tensorboard)
    metrics = {k: v for k, v in output.metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
    metrics["global_step"] = output.global_step
    if resume_from:
        # The Trainer's metrics cover this session only; say where it started, and drop a train_loss
        # of 0.0 when the checkpoint was already the last step (no step ran, nothing was averaged).
        metrics["resumed_from_step"] = int(Path(resume_from).name.rsplit("-", 1)[1])
        if output.global_step == metrics["resumed_from_step"]:
            metrics.pop("train_loss", None)
    del trainer, model  # free the (GPU) training copy before rebuilding the result on CPU
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not PartialState().is_main_process:
        return TrainResult(None, processor, {}, metrics)
    snapshots = {step: snapshot_dir(checkpoint_dir, step) for step in snapshot_steps}
    missing = [step for step, folder in snapshots.items() if not folder.is_dir()]
    if missing:
        raise EmtbenchError(
            f"the run ended after {output.global_step} steps without reaching snapshot step(s) "
            f"{', '.join(map(str, missing))}",
            where="--snapshot-steps",
            fix="pass steps below the run's last step (--max-steps, or the steps of --epochs)",
        )
    reference = load_reference(model_path) if snapshots else None  # one load for the final and the snapshots
    model, parameters = load_trained(final_dir, model_path, settings, reference=reference)
    return TrainResult(
        model,
        processor,
        {"trained": trained, **parameters},
        metrics,
        logs=logs,
        snapshots=snapshots,
        reference=reference,
    )


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


def supervised_positions(labels) -> Any:
    """The sequence positions whose logits some row's loss reads, or ``None`` when there are none.

    The causal-LM loss compares the logits at position ``t`` with the label at ``t + 1``; a position
    whose next label is ignored (``-100``: the prompt, the image tokens, the padding) costs the
    vocabulary-wide head and log-softmax and contributes nothing. One index set for the whole batch
    (the union over rows), because ``logits_to_keep`` takes one.
    """
    import torch

    from emtbench.methods.finetune.data import IGNORE_INDEX

    if labels is None or labels.dim() != 2 or labels.shape[1] < 2:
        return None
    positions = torch.nonzero((labels[:, 1:] != IGNORE_INDEX).any(dim=0)).flatten()
    return positions if positions.numel() else None


def compact_labels(labels, positions):
    """``(labels, logits_to_keep)`` for a loss over ``positions`` only that still shifts by one.

    Every causal-LM loss in the stack (the model's own, the soft-target hook, the Trainer's label
    smoother) drops the last logit and the first label before comparing. So the kept logits are
    ``positions`` plus one repeated last position, and the compact labels are one ignored column
    followed by the labels at ``positions + 1``: after the shift, logit ``positions[i]`` meets label
    ``positions[i] + 1`` exactly as in the full sequence, and the extra logit meets nothing.
    """
    import torch

    from emtbench.methods.finetune.data import IGNORE_INDEX

    keep = torch.cat([positions, positions[-1:]])
    ignored = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return torch.cat([ignored, labels[:, positions + 1]], dim=1), keep


def accepts_logits_to_keep(model) -> bool:
    """Whether the model (under a peft wrapper and accelerate's) takes a tensor ``logits_to_keep``."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def make_trainer_class():
    """``Trainer`` with three changes: resume of full-model checkpoints, a warm-up whose first step
    learns, and training logits only where the loss reads them.

    transformers 5 saves LLaVA checkpoints in the original (Hub) key layout but the stock Trainer
    resume calls ``load_state_dict`` on the raw file without converting the keys back, so every weight
    is silently skipped (a missing-keys warning) and training would restart from the base weights.
    Loading through ``from_pretrained`` applies the model's key mapping. PEFT adapters, FSDP and
    DeepSpeed checkpoints keep the stock path. The scheduler is :func:`warmup_scheduler`.

    In training, the model is asked for the logits of :func:`supervised_positions` only (the answer
    tokens: ~4 of the flagship's ~40 positions), through transformers' own ``logits_to_keep``; the
    loss and its gradients are the full sequence's (the other positions' terms are zero), without the
    vocabulary-wide head over the prompt. Models without ``logits_to_keep``, and evaluation (whose
    callers may read the logits), keep the stock path.
    """
    from transformers import Trainer

    class CheckpointConvertingTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            positions = supervised_positions(inputs.get("labels")) if model.training else None
            if positions is not None and "logits_to_keep" not in inputs:
                if self._answer_logits_only is None:
                    self._answer_logits_only = accepts_logits_to_keep(self.accelerator.unwrap_model(model))
                if self._answer_logits_only:
                    labels, keep = compact_labels(inputs["labels"], positions)
                    inputs = {**inputs, "labels": labels, "logits_to_keep": keep}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        _answer_logits_only: bool | None = None

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
    """The newest *complete* checkpoint (a save cut short by ``kill -9`` is skipped and removed)."""
    from emtbench.methods.resume import last_complete_checkpoint

    found = last_complete_checkpoint(checkpoint_dir)
    return str(found) if found else None
