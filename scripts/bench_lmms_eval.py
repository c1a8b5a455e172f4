"""`emtbench eval` against lmms-eval on the same EMT prompt and the same 64 images, side by side.

One LLaVA-architecture model, evaluated on the first --limit test images of EMT digits:

* emtbench: lm-eval's ``hf-multimodal`` with emtbench's ``emt_digits`` task (what ``emtbench eval
  --model hf-multimodal --tasks emt_digits --apply_chat_template`` runs), at each --batch-sizes;
* lmms-eval: its ``llava_hf`` model (the chat variant its registry returns) on a task this script
  writes from the same images, labels and prompt (``doc_to_messages``: the image, then the EMT
  question). lmms-eval 0.7.3's ``llava_hf`` runs batch 1 only (it asserts ``batch_size_per_gpu == 1``),
  so batch 1 is its best batch.

Each side runs in its own child process and interpreter (lmms-eval lives in its own virtualenv: it
must not replace the CPU torch), builds its model once, warms up on 4 samples, then times its
harness's ``simple_evaluate`` on the images. The children record the exact text each harness hands
the processor, so the script checks the prompts are identical before comparing answers. Rounds
alternate the sides; each side's best round is reported.

Without an offline LLaVA checkpoint the default model is emtbench's tiny random LLaVA (CLIP tower +
Llama, built locally): answers are not meaningful, but both harnesses must produce the same greedy
ones, and the timing is of the harness around a small model (pass --model for a real one).

  python3 -m venv /tmp/lmms && /tmp/lmms/bin/pip install torch==2.13.0
  echo torch==2.13.0 > /tmp/pin && /tmp/lmms/bin/pip install -c /tmp/pin lmms-eval decord
  /tmp/lmms/bin/pip uninstall -y torchvision timm   # torchvision's ops do not load on the CPU torch
  OMP_NUM_THREADS=1 python scripts/bench_lmms_eval.py --lmms-python /tmp/lmms/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LMMS_TASK = "emt_digits_lmms"
LMMS_UTILS = '''"""lmms-eval hooks for the EMT digits images this benchmark exported (written by bench_lmms_eval.py)."""

PROMPT = {prompt!r}
LABELS = {labels!r}


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT


def doc_to_messages(doc, lmms_eval_specific_kwargs=None):
    return [{{"role": "user", "content": [{{"type": "image", "url": doc_to_visual(doc)[0]}}, {{"type": "text", "text": PROMPT}}]}}]


def doc_to_target(doc):
    return LABELS[doc["label"]]


def process_results(doc, results):
    return {{"acc": float(results[0].strip().lower() == LABELS[doc["label"]].lower())}}
'''
LMMS_YAML = """task: {task}
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {parquet}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_messages: !function utils.doc_to_messages
doc_to_target: !function utils.doc_to_target
process_results: !function utils.process_results
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
"""


# ----------------------------------------------------------------------------- children


def _record_processor_texts(processor_class) -> list[str]:
    """Spy on the processor: every text a harness hands it, exactly as handed."""
    seen: list[str] = []
    original = processor_class.__call__

    def call(self, *args, **kwargs):
        text = kwargs.get("text", args[1] if len(args) > 1 else None)
        seen.extend([text] if isinstance(text, str) else list(text or []))
        return original(self, *args, **kwargs)

    processor_class.__call__ = call
    return seen


def child_emtbench(args) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.hf_vlms import HFMultimodalLM
    from lm_eval.tasks import TaskManager
    from transformers import LlavaProcessor

    from emtbench.tasks import TASKS_DIR

    texts = _record_processor_texts(LlavaProcessor)
    lm = HFMultimodalLM(pretrained=args.model, device="cpu", batch_size=1, dtype="float32")
    manager = TaskManager(include_path=str(TASKS_DIR))

    def run(limit: int, batch_size: int):
        lm.batch_size_per_gpu = batch_size
        return simple_evaluate(
            model=lm, tasks=["emt_digits"], task_manager=manager, limit=limit, batch_size=batch_size,
            apply_chat_template=True, log_samples=True, gen_kwargs=f"max_gen_toks={args.max_new_tokens}",
        )  # fmt: skip

    run(4, 1)  # warm-up: dataset load, first-call overheads
    result = {"seconds": {}, "answers": {}}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        texts.clear()
        start = time.perf_counter()
        out = run(args.limit, batch_size)
        result["seconds"][batch_size] = time.perf_counter() - start
        samples = out["samples"]["emt_digits"]
        result["answers"][batch_size] = {s["doc_id"]: s["resps"][0][0] for s in samples}
        result["labels"] = {s["doc_id"]: int(s["doc"]["label"]) for s in samples}
        result["prompts"] = sorted(set(texts))
    return result


def child_lmms(args) -> dict:
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager
    from transformers import LlavaProcessor

    texts = _record_processor_texts(LlavaProcessor)
    manager = TaskManager(include_path=args.task_dir)
    # device_map=cpu: its default "" is refused by transformers 5's from_pretrained
    model_args = f"pretrained={args.model},device=cpu,device_map=cpu,dtype=float32"

    def run(lm, limit: int):
        return simple_evaluate(model=lm, tasks=[LMMS_TASK], task_manager=manager, limit=limit, batch_size=1,
                               log_samples=True)  # fmt: skip

    # lmms-eval's evaluate() ends with lm.clean(), which deletes the model: the warm-up gets its own
    run(get_model("llava_hf").create_from_arg_string(model_args), 4)
    lm = get_model("llava_hf").create_from_arg_string(model_args)
    texts.clear()
    start = time.perf_counter()
    out = run(lm, args.limit)
    seconds = time.perf_counter() - start
    samples = out["samples"][LMMS_TASK]
    return {
        "seconds": {1: seconds},
        "answers": {
            1: {
                s["doc_id"]: s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0]
                for s in samples
            }
        },
        "labels": {s["doc_id"]: int(s["doc"]["label"]) for s in samples if "label" in s.get("doc", {})},
        "prompts": sorted(set(texts)),
    }


# ----------------------------------------------------------------------------- the parent


def export_images(work: Path, limit: int, max_new_tokens: int) -> Path:
    """The first ``limit`` digits test images and labels as parquet, plus an lmms-eval task folder."""
    from emtbench.datasets.emt import get_dataset
    from emtbench.datasets.loading import DataOptions, load_emt_dataset

    dataset = get_dataset("digits")
    data = load_emt_dataset(dataset, DataOptions(split="test", source="offline")).select(range(limit))
    task_dir = work / "lmms-task"
    task_dir.mkdir(parents=True, exist_ok=True)
    parquet = work / "digits.parquet"
    data.select_columns(["image", "label"]).to_parquet(str(parquet))
    (task_dir / "utils.py").write_text(LMMS_UTILS.format(prompt=dataset.prompt, labels=list(dataset.labels)))
    (task_dir / f"{LMMS_TASK}.yaml").write_text(
        LMMS_YAML.format(task=LMMS_TASK, parquet=parquet, max_new_tokens=max_new_tokens)
    )
    return task_dir


def run_side(python: str, side: str, args, task_dir: Path, work: Path) -> dict:
    out = work / f"{side}.json"
    command = [python, str(Path(__file__).resolve()), "--child", side, "--model", str(args.model),
               "--limit", str(args.limit), "--batch-sizes", args.batch_sizes, "--task-dir", str(task_dir),
               "--max-new-tokens", str(args.max_new_tokens), "--child-output", str(out)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with (work / f"{side}.log").open("w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise SystemExit(f"the {side} side failed ({code}); see {work / f'{side}.log'}")
    result = json.loads(out.read_text())
    result["seconds"] = {int(k): v for k, v in result["seconds"].items()}
    result["answers"] = {int(k): {int(d): a for d, a in v.items()} for k, v in result["answers"].items()}
    result["labels"] = {int(d): label for d, label in result["labels"].items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lmms-python", help="python of the virtualenv that has lmms-eval")
    parser.add_argument("--model", help="a LLaVA-HF checkpoint folder (default: a tiny random LLaVA)")
    parser.add_argument("--limit", type=int, default=64, help="images (default 64)")
    parser.add_argument("--batch-sizes", default="1,8,16,64", help="emtbench's batch sizes (lmms-eval: 1)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="as the EMT tasks (max_gen_toks 64)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--child", choices=("emtbench", "lmms"), help=argparse.SUPPRESS)
    parser.add_argument("--task-dir", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = child_emtbench(args) if args.child == "emtbench" else child_lmms(args)
        Path(args.child_output).write_text(json.dumps(result))
        return
    if not args.lmms_python:
        raise SystemExit("--lmms-python is required: the python of a virtualenv with lmms-eval installed")
    version = subprocess.run(
        [args.lmms_python, "-c", "import importlib.metadata as m; print(m.version('lmms_eval'))"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if not version:
        raise SystemExit(f"{args.lmms_python} cannot import lmms_eval")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-lmms-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        from emtbench.testing import build_tiny_llava

        args.model = build_tiny_llava(work / "tiny-llava")
    task_dir = export_images(work, args.limit, args.max_new_tokens)
    print(f"lmms-eval {version}; model {args.model}; {args.limit} digits test images; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip

    best: dict[str, dict] = {}
    for round_index in range(args.rounds):
        order = ("emtbench", "lmms") if round_index % 2 == 0 else ("lmms", "emtbench")
        for side in order:
            python = sys.executable if side == "emtbench" else args.lmms_python
            result = run_side(python, side, args, task_dir, work)
            rates = {b: args.limit / s for b, s in result["seconds"].items()}
            print(
                f"round {round_index + 1} {side:>8}: "
                + ", ".join(f"batch {b} {r:.2f} samples/s" for b, r in rates.items())
            )
            if side not in best:
                best[side] = result
            else:
                for b, s in result["seconds"].items():
                    best[side]["seconds"][b] = min(best[side]["seconds"][b], s)

    mine, theirs = best["emtbench"], best["lmms"]
    same_prompt = mine["prompts"] == theirs["prompts"]
    print(f"\nprompt handed to the processor: {'identical' if same_prompt else 'DIFFERENT'} on both sides:")
    for side, result in (("emtbench", mine), ("lmms-eval", theirs)):
        print(f"  {side}: {result['prompts']!r}")
    if theirs["labels"] and theirs["labels"] != mine["labels"]:
        print("  WARNING: the two sides saw different labels for the same doc ids")
    reference_answers = list(theirs["answers"][1].values())
    print(f"lmms-eval's answers: {sum(bool(a.strip()) for a in reference_answers)} of {len(reference_answers)} "
          f"non-empty, {len(set(reference_answers))} distinct")  # fmt: skip
    lmms_rate = args.limit / theirs["seconds"][1]
    mine_rates = {b: args.limit / s for b, s in mine["seconds"].items()}
    best_batch = max(mine_rates, key=mine_rates.get)
    reference = theirs["answers"][1]
    for b in sorted(mine["answers"]):
        answers = mine["answers"][b]
        identical = sum(answers[d].strip() == reference[d].strip() for d in reference) / len(reference)
        print(
            f"emtbench batch {b:>3}: {mine_rates[b]:7.2f} samples/s, identical answers to lmms-eval: {identical:.1%}"
        )
    print(f"lmms-eval batch   1: {lmms_rate:7.2f} samples/s (its only batch size)")
    print(f"best: emtbench batch {best_batch} {mine_rates[best_batch]:.2f} samples/s vs lmms-eval "
          f"{lmms_rate:.2f}: {mine_rates[best_batch] / lmms_rate:.2f}x (target >= 1); "
          f"at batch 1: {mine_rates.get(1, float('nan')) / lmms_rate:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
