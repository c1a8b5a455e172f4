"""Flagship eval throughput and compute efficiency, measured side by side in one run.

For each batch size: the inner loop of lm-eval's ``hf-multimodal`` on EMT digits test images
(processor -> ``generate`` greedy, up to --new-tokens tokens), timed; FLOPs of the same call counted
with torch's FlopCounterMode. The machine's bf16 matmul rate is measured in the same process, so the
ratio "achieved FLOP/s / bf16 matmul FLOP/s" is free of cross-run noise (on a shared CPU both vary).

  python scripts/bench_flagship.py --model ~/.cache/emtbench/flagship-base-<key> --batch-sizes 1,4,8,16
  python scripts/bench_flagship.py --tiny   # smoke run on a tiny random flagship
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def bf16_matmul_rate(size: int = 1024, seconds: float = 3.0) -> float:
    """Sustained FLOP/s of square bf16 matmuls on this machine (2*n^3 FLOPs each)."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start)


def eval_batches(processor, batch_size: int, count: int):
    from emtbench.tasks.data import DataOptions, load_emt_dataset
    from emtbench.tasks.registry import get_dataset

    dataset = get_dataset("digits")
    data = load_emt_dataset(dataset, DataOptions(split="test", source="offline")).select(range(count))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": dataset.prompt}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    images = [im.convert("RGB") for im in data["image"]]
    return [images[i : i + batch_size] for i in range(0, count, batch_size)], prompt


def run_batch(model, processor, images, prompt, new_tokens: int):
    batch = processor(
        images=[[im] for im in images], text=[prompt] * len(images), padding="longest", return_tensors="pt"
    )
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    return model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="a saved flagship folder")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random flagship instead")
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--samples", type=int, default=32, help="images timed per batch size")
    parser.add_argument("--new-tokens", type=int, default=8, help="EMT answers are ~8 tokens")
    args = parser.parse_args()

    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import emtbench  # noqa: F401  (registers the flagship Auto classes)

    if args.tiny:
        from emtbench.models.flagship.assemble import build_tiny_flagship

        args.model = build_tiny_flagship(Path(tempfile.mkdtemp()) / "tiny-flagship", image_size=224)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.bfloat16).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    print(f"threads: {torch.get_num_threads()}  model: {args.model}")
    peak = bf16_matmul_rate()
    print(f"bf16 matmul rate (1024^2, measured now): {peak / 1e9:.1f} GFLOP/s")
    rows = []
    with torch.inference_mode():
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            batches, prompt = eval_batches(processor, batch_size, args.samples)
            run_batch(model, processor, batches[0], prompt, args.new_tokens)  # warm-up
            with FlopCounterMode(display=False) as counter:
                run_batch(model, processor, batches[0], prompt, args.new_tokens)
            flops_per_sample = counter.get_total_flops() / len(batches[0])
            start = time.perf_counter()
            for images in batches:
                run_batch(model, processor, images, prompt, args.new_tokens)
            elapsed = time.perf_counter() - start
            rate = args.samples / elapsed
            achieved = rate * flops_per_sample
            rows.append((batch_size, rate, flops_per_sample, achieved))
            print(
                f"batch {batch_size:>3}: {rate:6.2f} samples/s  {flops_per_sample / 1e9:6.1f} GFLOP/sample  "
                f"{achieved / 1e9:7.1f} GFLOP/s  = {achieved / peak:6.1%} of bf16 matmul rate"
            )
    best = max(rows, key=lambda r: r[1])
    print(
        f"best: batch {best[0]} at {best[1]:.2f} samples/s; achieved/bf16-matmul = {best[3] / peak:.1%} "
        f"(target >= 25%); speed-up over batch {rows[0][0]}: {best[1] / rows[0][1]:.2f}x"
    )


if __name__ == "__main__":
    main()
