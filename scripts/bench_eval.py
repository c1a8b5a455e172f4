"""Batching benchmark: one EMT task on the tiny LLaVA at batch size 1 and 8, in one process.

Prints samples/s for both, their ratio (target >= 3) and the share of identical answers
(target >= 99%). The model is loaded once and reused, so only generation is compared.

    python scripts/bench_eval.py [--task emt_digits] [--limit 64] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def run_once(lm, task_manager, task: str, limit: int, batch_size: int) -> tuple[float, dict[int, str]]:
    from lm_eval import simple_evaluate

    lm.batch_size_per_gpu = batch_size
    start = time.perf_counter()
    out = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=task_manager,
        limit=limit,
        apply_chat_template=True,
        log_samples=True,
        batch_size=batch_size,
    )
    elapsed = time.perf_counter() - start
    answers = {s["doc_id"]: s["resps"][0][0] for s in out["samples"][task]}
    return elapsed, answers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="emt_digits")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--model", help="model directory (default: a fresh tiny random LLaVA)")
    args = parser.parse_args()

    from lm_eval.models.hf_vlms import HFMultimodalLM
    from lm_eval.tasks import TaskManager

    from emtbench.tasks import TASKS_DIR
    from emtbench.testing import build_tiny_llava

    model_dir = args.model or str(build_tiny_llava(tempfile.mkdtemp() + "/tiny-llava"))
    lm = HFMultimodalLM(pretrained=model_dir, device="cpu", batch_size=1)
    task_manager = TaskManager(include_path=str(TASKS_DIR))
    run_once(lm, task_manager, args.task, 4, 1)  # warm-up: dataset load, first-call overheads

    t1, answers1 = run_once(lm, task_manager, args.task, args.limit, 1)
    t8, answers8 = run_once(lm, task_manager, args.task, args.limit, 8)
    identical = sum(answers1[k] == answers8[k] for k in answers1) / len(answers1)
    rate1, rate8 = len(answers1) / t1, len(answers8) / t8
    print(f"task {args.task}, {len(answers1)} samples, model {model_dir}")
    print(f"batch size 1: {rate1:8.2f} samples/s ({t1:.1f} s)")
    print(f"batch size 8: {rate8:8.2f} samples/s ({t8:.1f} s)")
    print(f"speed-up bs8/bs1: {rate8 / rate1:.2f}x (target >= 3)")
    print(f"identical answers: {identical:.1%} (target >= 99%)")


if __name__ == "__main__":
    main()
