"""``emtbench finetune`` and ``emtbench continual``: training with forgetting mitigation (SPEC §3)."""

from __future__ import annotations

import argparse

from emtbench.core.errors import EmtbenchError

FINETUNE_HELP = """\
Fine-tune a LLaVA-style multimodal LLM with one of the continual-learning paper's methods and save a
Hugging Face model folder (safetensors, processor, emtbench_run.json, model card) that
`emtbench eval --model hf-multimodal --model_args pretrained=OUTPUT` loads with no extra code.

Methods (the vision tower is always frozen):
  linear  projector only                     full  projector + language model
  lora    projector + LoRA on all LLM linear layers (rank hidden/2, alpha 8, rsLoRA, dropout 0.05)
  soft    full + soft-target loss (--alpha, default 0.01)
  msgm    lora + soft-target loss (--alpha, default 0.01)
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


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from emtbench.methods.finetune import METHODS, MULTI_GPU_HELP

    parser.epilog = MULTI_GPU_HELP
    parser.add_argument("--model", required=True, help="base model: a Hugging Face folder or Hub id")
    parser.add_argument("--method", default="lora", help=f"one of {', '.join(METHODS)} (default: lora)")
    parser.add_argument(
        "--output", required=True, help="folder to write (refused if it holds a different run)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--image-root", help="folder that a LLaVA JSON's image paths are relative to")
    parser.add_argument(
        "--limit", type=int, help="use a seeded random subset of N training examples per task"
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs (default 1)")
    parser.add_argument(
        "--max-steps", type=int, default=-1, help="optimizer steps; overrides --epochs when > 0"
    )
    parser.add_argument(
        "--lr", type=float, help="learning rate (default: 2e-5 full/soft, 2e-4 lora/msgm, 1e-3 linear)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="examples per device per step (default 8)")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    parser.add_argument(
        "--warmup-ratio",
        type=float,
        default=0.03,
        help="linear warm-up share of the steps (default 0.03); the first step already learns",
    )
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument(
        "--lr-scheduler", default="cosine", help="transformers scheduler name (default cosine)"
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="trade compute for activation memory"
    )
    parser.add_argument("--alpha", type=float, help="soft-target α for soft/msgm (default 0.01)")
    parser.add_argument("--lora-rank", type=int, help="LoRA rank (default: LLM hidden size / 2)")
    parser.add_argument("--lora-alpha", type=float, default=8.0, help="LoRA alpha (default 8)")
    parser.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout (default 0.05)")
    parser.add_argument(
        "--no-rslora", action="store_true", help="plain LoRA scaling alpha/r instead of alpha/√r"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for data order, sampling and init (default 0)"
    )
    parser.add_argument(
        "--save-steps", type=int, default=500, help="Trainer checkpoint interval (default 500)"
    )
    parser.add_argument("--logging-steps", type=int, default=10, help="loss logging interval (default 10)")


def register(subparsers: argparse._SubParsersAction) -> None:
    finetune = subparsers.add_parser(
        "finetune",
        help="fine-tune with linear / full / LoRA / soft-target / mSGM training, optional rehearsal",
        description=FINETUNE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_training_arguments(finetune)
    finetune.add_argument("--data", required=True, help="emt:NAME or a LLaVA-format JSON file")
    finetune.add_argument(
        "--rehearsal-data",
        action="append",
        default=[],
        help="earlier task(s) to rehearse (emt:NAME or JSON; repeat or comma-separate)",
    )
    finetune.add_argument(
        "--rehearsal-fraction",
        type=float,
        default=0.01,
        help="share of each rehearsal task mixed in (default 0.01)",
    )
    finetune.add_argument(
        "--keep-adapter", action="store_true", help="save the peft adapter instead of merging"
    )
    finetune.add_argument("--resume", action="store_true", help="continue from the last Trainer checkpoint")
    finetune.add_argument(
        "--keep-checkpoints", action="store_true", help="keep Trainer checkpoints after success"
    )
    finetune.add_argument(
        "--push-to-hub", metavar="REPO_ID", help="upload the finished folder to this Hub repo"
    )
    finetune.add_argument("--private", action="store_true", help="create the Hub repo as private")
    finetune.set_defaults(handler=run_finetune)

    continual = subparsers.add_parser(
        "continual",
        help="train a task sequence, evaluate after every stage, write the accuracy matrix",
        description=CONTINUAL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_training_arguments(continual)
    continual.add_argument(
        "--sequence", required=True, help="comma-separated data specs, trained in this order"
    )
    continual.add_argument(
        "--eval-tasks", required=True, help="comma-separated lm-eval tasks run after each stage"
    )
    continual.add_argument(
        "--rehearsal-fraction",
        type=float,
        default=0.0,
        help="mix this share of every earlier task into each stage (paper: 0.01; default 0 = off)",
    )
    continual.add_argument("--eval-limit", type=int, help="evaluate only the first N examples of each task")
    continual.add_argument("--eval-batch-size", type=int, default=8, help="evaluation batch size (default 8)")
    continual.add_argument(
        "--eval-base", action="store_true", help="also evaluate the base model (key 'base')"
    )
    continual.add_argument("--device", help="evaluation device (default: cuda if available, else cpu)")
    continual.add_argument(
        "--eval-args",
        default="",
        help='extra lm-eval arguments, quoted, e.g. "--metadata \'{\\"split\\": \\"test\\"}\'"',
    )
    continual.set_defaults(handler=run_continual)


def _settings(args: argparse.Namespace):
    from emtbench.methods.finetune import TrainSettings

    return TrainSettings(
        method=args.method,
        alpha=args.alpha,
        epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        lr_scheduler=args.lr_scheduler,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        use_rslora=not args.no_rslora,
        keep_adapter=getattr(args, "keep_adapter", False),
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
    )


def _split_list(values: list[str] | str) -> list[str]:
    items = [values] if isinstance(values, str) else values
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def run_finetune(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.hub.push import push_to_hub
    from emtbench.methods.finetune import finetune

    if args.limit is not None and args.limit < 1:
        raise EmtbenchError("--limit must be at least 1", where="--limit")
    output, record = finetune(
        args.model,
        args.data,
        args.output,
        _settings(args),
        rehearsal_specs=_split_list(args.rehearsal_data),
        rehearsal_fraction=args.rehearsal_fraction,
        image_root=args.image_root,
        limit=args.limit,
        overwrite=args.overwrite,
        resume=args.resume,
        keep_checkpoints=args.keep_checkpoints,
    )
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch` the main process reports and uploads
        return 0
    params = record["parameters"]
    print(
        f"saved {output} ({args.method}: {params['trained']:,} trained parameters, "
        f"{100 * params['changed_fraction']:.2f}% of all values changed)"
    )
    if args.push_to_hub:
        url = push_to_hub(output, args.push_to_hub, private=args.private)
        print(f"uploaded to {url}")
    return 0


def run_continual(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.methods.continual import MATRIX_FILE, continual

    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = continual(
        args.model,
        _split_list(args.sequence),
        _split_list(args.eval_tasks),
        args.output,
        _settings(args),
        rehearsal_fraction=args.rehearsal_fraction,
        image_root=args.image_root,
        limit=args.limit,
        eval_limit=args.eval_limit,
        eval_batch_size=args.eval_batch_size,
        eval_base=args.eval_base,
        device=device,
        eval_args=args.eval_args,
        overwrite=args.overwrite,
    )
    width = max(len(task) for task in result["tasks"])
    print(f"{'after':<{width}}  " + "  ".join(f"{task:>{width}}" for task in result["tasks"]))
    for stage, row in zip(result["stages"], result["matrix"], strict=True):
        print(f"{stage:<{width}}  " + "  ".join(f"{value:>{width}.2f}" for value in row))
    print(f"BWT {result['bwt']}  forgetting {result['forgetting']}  -> {args.output}/{MATRIX_FILE}")
    return 0
