"""Training throughput and peak memory of ``full`` vs ``lora`` vs ``linear`` on one model and data, one run.

Usage:
  python scripts/bench_train.py                         # a small random LLaVA built locally
  python scripts/bench_train.py --model PATH --examples 64 --batch-size 8 --epochs 1

Every method trains the same examples in the same order through ``emtbench.methods.finetune.trainer.train``
(the code ``emtbench finetune`` runs). Tokens/s = real (non-padding) tokens processed / the Trainer's
train_runtime, best of --repeats interleaved rounds. Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident set
size sampled every 5 ms during the run minus the resident size just before it (so it includes the
loaded model, gradients, optimizer state, activations, and the CPU rebuild of the result after the
final save: base model + trained model, used to count changed parameters). Ratios are relative to
``full``.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def resident_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """Samples the resident set size in a thread: CPU tensors are not visible to tracemalloc."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model folder (default: a random LLaVA, hidden 256, 4 layers)")
    parser.add_argument("--data", default="emt:digits")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--methods", default="full,lora,linear")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the fastest run counts")
    args = parser.parse_args()

    import torch
    from transformers import AutoProcessor

    from emtbench.methods.finetune import TrainSettings
    from emtbench.methods.finetune.data import ConversationCollator, load_conversations
    from emtbench.methods.finetune.trainer import train
    from emtbench.testing import build_tiny_llava

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model_path = args.model or str(build_tiny_llava(work / "llava", hidden_size=256, num_layers=4))
    data = load_conversations(args.data, limit=args.examples, seed=0)
    collator = ConversationCollator(AutoProcessor.from_pretrained(model_path))
    tokens_per_epoch = sum(
        int(
            collator([data[i] for i in range(start, min(start + args.batch_size, len(data)))])[
                "attention_mask"
            ].sum()
        )
        for start in range(0, len(data), args.batch_size)
    )
    tokens = tokens_per_epoch * args.epochs
    cuda = torch.cuda.is_available()
    rows: dict[str, dict] = {}
    # Interleaved rounds, best throughput kept: other load on a shared machine only ever slows a run down.
    for _ in range(args.repeats):
        for method in args.methods.split(","):
            settings = TrainSettings.of(
                method=method,
                epochs=args.epochs,
                batch_size=args.batch_size,
                logging_steps=1000,
                save_steps=10**6,
            )
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            before = resident_bytes()
            with PeakSampler() as sampler:
                result = train(model_path, data, settings, checkpoint_dir=work / f"ckpt-{method}")
            peak = torch.cuda.max_memory_allocated() if cuda else sampler.peak - before
            speed = tokens / result.train_metrics["train_runtime"]
            row = rows.setdefault(method, {"tokens_per_s": 0.0, "peak_mib": 0.0, "runs": []})
            row["runs"].append(round(speed, 1))
            row["tokens_per_s"] = max(row["tokens_per_s"], speed)
            row["peak_mib"] = max(row["peak_mib"], peak / 2**20)
            row["trained"] = result.parameters["trained"]
            del result
    print(f"\nmodel {model_path}; {len(data)} examples x {args.epochs} epochs = {tokens:.0f} tokens; "
          f"device {'cuda' if cuda else 'cpu'}")  # fmt: skip
    reference = rows.get("full") or next(iter(rows.values()))
    print(
        f"{'method':<8} {'tokens/s':>10} {'x full':>7} {'peak MiB':>10} {'x full':>7} {'trained params':>15}  all runs"
    )
    for method, row in rows.items():
        print(
            f"{method:<8} {row['tokens_per_s']:>10.1f} {row['tokens_per_s'] / reference['tokens_per_s']:>7.2f} "
            f"{row['peak_mib']:>10.1f} {row['peak_mib'] / reference['peak_mib']:>7.2f} {row['trained']:>15,}  {row['runs']}"
        )


if __name__ == "__main__":
    main()
