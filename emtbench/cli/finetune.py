"""``emtbench finetune`` and ``emtbench continual``: training with forgetting mitigation (CL-LLaVA App. A.5)."""

from __future__ import annotations

import argparse

FINETUNE_HELP = """\
Fine-tune a LLaVA-style multimodal LLM with one of the continual-learning paper's methods and save a
Hugging Face model folder (safetensors, processor, emtbench_run.json, model card) that
`emtbench eval --model hf-multimodal --model_args pretrained=OUTPUT` loads with no extra code.

Methods (the vision tower is always frozen; default learning rate and its source):
{methods}
LoRA is merged into the weights unless --keep-adapter (then load with pretrained=BASE,peft=OUTPUT).

Data: --data emt:NAME (the EMT training split as `The object is a(n) {label}.` answers) or a
LLaVA-format JSON file (image + human/gpt conversations; --image-root for relative image paths).
The loss is computed on answer tokens only.

Examples:
  emtbench finetune --model llava-hf/llava-1.5-7b-hf --method msgm --data emt:cifar10 \\
      --rehearsal-data emt:mnist --rehearsal-fraction 0.01 --epochs 1 --bf16 \\
      --gradient-checkpointing --output out/llava-msgm-cifar10
  emtbench finetune --model out/llava-msgm-cifar10 --method linear --data train.json \\
      --image-root images/ --max-steps 200 --output out/next --push-to-hub me/llava-next

An interrupted run continues from its last Trainer checkpoint with --resume (checkpoints are kept
in .OUTPUT.checkpoints next to the output until the run finishes).

Trainer habits: --report-to tensorboard (or wandb) reports the logs as the Trainer does; the log
history is kept in OUTPUT/trainer_state.json either way (TensorBoard's event files in OUTPUT/runs).
Any further transformers TrainingArguments field passes through as --FIELD VALUE (read by
transformers' HfArgumentParser), e.g. --max_grad_norm 0.5 --optim adafactor --save_strategy epoch;
a field emtbench has a flag for is refused with that flag's name.
"""

CONTINUAL_HELP = """\
Train a sequence of tasks one after another (each stage starts from the previous stage's model, LoRA
merged after every stage), evaluate --eval-tasks after every stage through the same lm-eval path as
`emtbench eval`, and write OUTPUT/accuracy_matrix.json:
  {"tasks": [...], "stages": [...], "matrix": [[acc % per eval task] per stage], "bwt": .., "forgetting": ..}
plus each stage's checkpoint (OUTPUT/stageN_TASK) and its lm-eval results (OUTPUT/eval/).
Re-running the same command after an interruption continues where it stopped.

Example:
  emtbench continual --model llava-hf/llava-1.5-7b-hf --method lora \\
      --sequence emt:mnist,emt:cifar10,emt:cifar100 \\
      --eval-tasks emt_mnist,emt_cifar10,emt_cifar100,emt_miniimagenet \\
      --rehearsal-fraction 0.01 --eval-batch-size 16 --bf16 --output out/continual-lora
"""


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


def method_table() -> str:
    """One line per registered method: name, summary, default learning rate and its source."""
    from emtbench.methods.finetune import FINETUNE_METHODS

    return "\n".join(
        f"  {m.name:<7} {m.summary}\n          lr {m.default_learning_rate:g} ({m.learning_rate_source})"
        for m in FINETUNE_METHODS.values()
    )


def method_option_classes() -> list[tuple[type, list[str]]]:
    """Each options dataclass that declares fields, with the methods whose options include it."""
    import dataclasses
    import inspect

    from emtbench.methods.finetune import FINETUNE_METHODS

    found: dict[type, list[str]] = {}
    for method in FINETUNE_METHODS.values():
        for cls in method.options_class.__mro__:
            if dataclasses.is_dataclass(cls) and inspect.get_annotations(cls):
                found.setdefault(cls, []).append(method.name)
    return list(found.items())


def add_training_arguments(parser: argparse.ArgumentParser, *, exclude: tuple[str, ...] = ()) -> None:
    """--method, the shared training flags, and each method's own flags grouped under its name."""
    import inspect

    from emtbench.core.options import add_options
    from emtbench.methods.finetune import TrainingOptions

    parser.epilog = MULTI_GPU_HELP
    parser.add_argument("--method", default="lora", help="fine-tuning method, listed above (default: lora)")
    add_options(parser.add_argument_group("training"), TrainingOptions)
    for cls, methods in method_option_classes():
        group = parser.add_argument_group(f"{' / '.join(methods)} options")
        own = [name for name in inspect.get_annotations(cls) if name not in exclude]
        add_options(group, cls, only=own)


def settings_from_args(args: argparse.Namespace, extra: list[str] | None = None):
    """The TrainSettings of the typed flags: a method flag another method owns is refused by name, and
    the flags emtbench does not know (``extra``) must be TrainingArguments fields."""
    from emtbench.core.options import given
    from emtbench.methods.finetune import TrainingOptions, TrainSettings
    from emtbench.methods.finetune.trainer_args import trainer_args_from_argv

    values = given(args, TrainingOptions)
    for cls, _ in method_option_classes():
        values.update(given(args, cls))
    if extra:
        own = list(getattr(args, "own_flags", ()))
        values["trainer_args"] = trainer_args_from_argv(list(extra), own_flags=own)
    return TrainSettings.of(args.method, **values)


def own_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The long flags of a command, for "did you mean" hints on a flag it does not have."""
    return [flag for flag in parser._option_string_actions if flag.startswith("--")]


def register(subparsers: argparse._SubParsersAction) -> None:
    from emtbench.core.options import add_options
    from emtbench.methods.continual import ContinualOptions
    from emtbench.methods.finetune import FinetuneOptions

    finetune = subparsers.add_parser(
        "finetune",
        help="fine-tune with linear / full / LoRA / soft-target / mSGM training, optional rehearsal",
        description=FINETUNE_HELP.replace("{methods}", method_table()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(finetune, FinetuneOptions, only=("model", "output"))
    add_training_arguments(finetune)
    add_options(finetune, FinetuneOptions, exclude=("model", "output"))
    finetune.set_defaults(handler=run_finetune, accepts_extra=True, own_flags=own_flags(finetune))

    continual = subparsers.add_parser(
        "continual",
        help="train a task sequence, evaluate after every stage, write the accuracy matrix",
        description=CONTINUAL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(continual, ContinualOptions, only=("model", "output", "overwrite", "image_root", "limit"))
    add_training_arguments(continual, exclude=("keep_adapter",))
    add_options(continual, ContinualOptions, exclude=("model", "output", "overwrite", "image_root", "limit"))
    continual.set_defaults(handler=run_continual, accepts_extra=True, own_flags=own_flags(continual))


def options_from_args(args: argparse.Namespace, extra: list[str] | None = None):
    """The FinetuneOptions of the typed ``emtbench finetune`` flags (TrainingArguments fields in ``extra``)."""
    from emtbench.core.options import from_namespace
    from emtbench.methods.finetune import FinetuneOptions

    return from_namespace(FinetuneOptions, args, settings=settings_from_args(args, extra))


def run_finetune(args: argparse.Namespace, extra: list[str]) -> int:
    from accelerate import PartialState

    from emtbench.methods.finetune import finetune

    result = finetune(options_from_args(args, extra))
    if not PartialState().is_main_process:  # under `accelerate launch` the main process reports and uploads
        return 0
    params = result.parameters
    print(
        f"saved {result.output} ({args.method}: {params['trained']:,} trained parameters, "
        f"{100 * params['changed_fraction']:.2f}% of all values changed)"
    )
    if result.hub_url:
        print(f"uploaded to {result.hub_url}")
    return 0


def run_continual(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.core.options import from_namespace
    from emtbench.methods.continual import MATRIX_FILE, ContinualOptions, continual

    settings = settings_from_args(args, extra)
    result = continual(from_namespace(ContinualOptions, args, settings=settings)).matrix
    width = max(len(task) for task in result["tasks"])
    print(f"{'after':<{width}}  " + "  ".join(f"{task:>{width}}" for task in result["tasks"]))
    for stage, row in zip(result["stages"], result["matrix"], strict=True):
        print(f"{stage:<{width}}  " + "  ".join(f"{value:>{width}.2f}" for value in row))
    print(f"BWT {result['bwt']}  forgetting {result['forgetting']}  -> {args.output}/{MATRIX_FILE}")
    return 0
