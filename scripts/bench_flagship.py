"""Flagship eval throughput and compute efficiency, measured side by side in one run.

For each batch size: the inner loop of lm-eval's ``hf-multimodal`` on EMT digits test images
(processor -> ``generate`` greedy, exactly --new-tokens tokens, with the attention of
--attn-implementation, by default the demo's), timed; FLOPs of the same call counted
with torch's FlopCounterMode. The machine's bf16 matmul rate is measured in the same process, in
bursts interleaved with the eval batches (see MatmulMeter), so the ratio "achieved FLOP/s / bf16
matmul FLOP/s" compares the two under the same load on a shared CPU. For the best batch size the
time is then split into processor, vision tower + projector, LM prefill and decoding, which says
where further speed has to come from, and bounded from above: the same processor and vision time
plus every matrix product the language model ran, each timed alone at its own shape (see
MatmulLog), is the share that no change to the LM's other work (norms, RoPE, attention's softmax,
the cache, sampling) can pass while the vision tower stays as it is.

  OMP_NUM_THREADS=1 python scripts/bench_flagship.py --model ~/.cache/emtbench/flagship-base-<key>
  python scripts/bench_flagship.py --tiny   # smoke run on a tiny random flagship
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class MatmulMeter:
    """This machine's bf16 matmul rate, sampled in bursts interleaved with the work it is compared to.

    Why interleaved: on a shared VM the 1024^2 bf16 matmul rate swings 2-3x within a minute (a noisy
    neighbour on the sibling core); one measurement at the start compares the eval with a different
    machine. A burst right after each eval batch, as long as that batch took, sees the same conditions.
    """

    def __init__(self, size: int = 1024):
        self.a = torch.randn(size, size, dtype=torch.bfloat16)
        self.b = torch.randn(size, size, dtype=torch.bfloat16)
        self.flops_per_call = 2 * size**3
        self.flops = 0.0
        self.seconds = 0.0
        for _ in range(3):
            self.a @ self.b

    def burst(self, seconds: float) -> None:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.a @ self.b
            count += 1
        self.seconds += time.perf_counter() - start
        self.flops += count * self.flops_per_call

    @property
    def rate(self) -> float:
        return self.flops / self.seconds


def eval_inputs(processor, count: int) -> tuple[list, str]:
    """The first ``count`` digits test images (RGB) and the chat prompt every one of them is asked with.

    The prompt is the one lm-eval's ``emt_digits`` sends with ``--apply_chat_template`` (the question,
    then ``<image>``), so the flagship's shared-prefix prefill applies here as it does in evaluation.
    """
    from emtbench.datasets.emt import get_dataset
    from emtbench.datasets.loading import DataOptions, load_emt_dataset

    dataset = get_dataset("digits")
    data = load_emt_dataset(dataset, DataOptions(split="test", source="offline")).select(range(count))
    messages = [{"role": "user", "content": [{"type": "text", "text": dataset.prompt}, {"type": "image"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return [im.convert("RGB") for im in data["image"]], prompt


def run_batch(model, processor, images, prompt, new_tokens: int, **generate_kwargs):
    from emtbench.models.flagship.modeling_emt_flagship import VISION_FEATURE_CACHE

    VISION_FEATURE_CACHE.clear()  # every timed run computes its vision features (no reuse across rounds)
    batch = processor(
        images=[[im] for im in images], text=[prompt] * len(images), padding="longest", return_tensors="pt"
    )
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    # Exactly new_tokens tokens per row, with no logits processor: without an end-of-sequence token
    # generate never stops early. (``min_new_tokens`` would add two processors that clone and mask the
    # (batch x vocabulary) logits at every step, work that lm-eval's generation does not do.)
    return model.generate(
        **batch, max_new_tokens=new_tokens, eos_token_id=None, do_sample=False, **generate_kwargs
    )


VARIANTS = (
    "baseline", "static-cache", "compile-decode", "compile-lm", "eager-attention", "static-eager", "eager-gqa",
    "eager-one-pass", "peft-adapter",
)  # fmt: skip
"""Ways to run the same greedy generation, compared at the best batch size by --variants:

* ``static-cache``: ``generate(cache_implementation="static")``, a preallocated key/value cache;
* ``compile-decode``: the static cache plus transformers' own compilation of the decoding step
  (``CompileConfig``; transformers compiles on GPUs only unless told ``_compile_all_devices``);
* ``compile-lm``: ``torch.compile`` of the language model (prefill and decoding, dynamic shapes);
* ``eager-attention``: the model loaded with ``attn_implementation="eager"`` instead of SDPA;
* ``static-eager``: both the static cache and eager attention;
* ``eager-gqa``: ``attn_implementation="emt_eager_gqa"``, eager attention that reads shared key/value
  heads in place (emtbench.models.flagship.grouped_attention);
* ``eager-one-pass``: eager attention with the vision tower run over the whole batch in one pass
  (as before ``EfficientNetLiteVisionModel.IMAGES_PER_PASS``);
* ``peft-adapter``: the model with a LoRA adapter (zero-initialised, so the same answers) loaded by
  ``PeftModel.from_pretrained``, as lm-eval's ``--model_args pretrained=BASE,peft=ADAPTER`` loads it:
  every weight frozen, which is what once sent the LM head down torch's slow batched path.
"""


def prepare_variant(name: str, model_dir, dtype):
    """(model, generate keyword arguments) for one variant; each gets its own model instance."""
    from transformers import AutoModelForImageTextToText, CompileConfig

    attention = {"eager-attention": "eager", "static-eager": "eager", "eager-one-pass": "eager",
                 "eager-gqa": "emt_eager_gqa"}.get(name)  # fmt: skip
    attention_args = {"attn_implementation": attention} if attention else {}
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype, **attention_args).eval()
    if name == "eager-one-pass":
        model.model.vision_tower.IMAGES_PER_PASS = 2**31  # this instance only
    if name in ("baseline", "eager-attention", "eager-gqa", "eager-one-pass"):
        return model, {}
    if name == "peft-adapter":
        from peft import LoraConfig, PeftModel, get_peft_model

        lora = LoraConfig(r=8, target_modules=r".*language_model.*\.(q_proj|v_proj)")
        with tempfile.TemporaryDirectory(prefix="bench-adapter-") as adapter:
            get_peft_model(model, lora).save_pretrained(adapter)
            base = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).eval()
            return PeftModel.from_pretrained(base, adapter).eval(), {}
    if name in ("static-cache", "static-eager"):
        return model, {"cache_implementation": "static"}
    if name == "compile-decode":
        config = CompileConfig(fullgraph=False, dynamic=False)
        config._compile_all_devices = True
        return model, {"cache_implementation": "static", "compile_config": config}
    if name == "compile-lm":
        language_model = model.model.language_model
        language_model.forward = torch.compile(language_model.forward, dynamic=True)
        return model, {}
    raise SystemExit(f"unknown variant {name!r}; use {', '.join(VARIANTS)}")


def compare_variants(args, processor, images, prompt, batch_size: int) -> None:
    """Each variant at one batch size, interleaved over rounds: samples/s, share of the bf16 rate, answers."""
    from torch.utils.flop_counter import FlopCounterMode

    names = [n for n in args.variants.split(",") if n]
    if "baseline" not in names:
        names.insert(0, "baseline")
    batches = [images[i : i + batch_size] for i in range(0, args.samples, batch_size)]
    prepared, answers, warmup = {}, {}, {}
    with FlopCounterMode(display=False) as counter:
        reference, _ = prepare_variant("baseline", args.model, torch.bfloat16)
        run_batch(reference, processor, batches[0], prompt, args.new_tokens)
    flops_per_sample = counter.get_total_flops() / len(batches[0])
    del reference
    for name in names:
        model, kwargs = prepare_variant(name, args.model, torch.bfloat16)
        start = time.perf_counter()
        run_batch(model, processor, batches[0], prompt, args.new_tokens, **kwargs)  # warm-up (and compile)
        warmup[name] = time.perf_counter() - start
        prepared[name] = (model, kwargs)
        answers[name] = torch.cat(
            [
                run_batch(model, processor, b, prompt, args.new_tokens, **kwargs)[:, -args.new_tokens :]
                for b in batches
            ]
        )
    seconds = {name: [] for name in names}
    meter = MatmulMeter()
    for round_index in range(args.variant_rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:  # alternate the order: load drifts
            model, kwargs = prepared[name]
            elapsed = 0.0
            for images_batch in batches:
                start = time.perf_counter()
                run_batch(model, processor, images_batch, prompt, args.new_tokens, **kwargs)
                took = time.perf_counter() - start
                elapsed += took
                meter.burst(max(took, 0.5))
            seconds[name].append(elapsed)
    peak = meter.rate
    base = min(seconds["baseline"])
    print(f"\nvariants at batch {batch_size}, best of {args.variant_rounds} interleaved rounds "
          f"(bf16 matmul rate {peak / 1e9:.0f} GFLOP/s, sampled between batches):")  # fmt: skip
    for name in names:
        best = min(seconds[name])
        rate = args.samples / best
        same = (answers[name] == answers["baseline"]).all(dim=1).float().mean().item()
        print(f"  {name:<16} {rate:6.2f} samples/s = {rate * flops_per_sample / peak:6.1%} of the bf16 matmul "
              f"rate, {base / best:5.2f}x baseline, identical answers {same:.1%}, first call {warmup[name]:.1f} s")  # fmt: skip


class MatmulLog(TorchDispatchMode):
    """Counts the matrix products run while :attr:`active`, by op, operand shapes, strides and dtype.

    Why: timed alone, the products say how fast the LM could be if the rest of its work took no
    time. ``active`` is switched on by hooks on the language model and the LM head only, so the
    vision tower and projector (timed as a whole in the breakdown) are not counted twice.
    """

    OPS = (torch.ops.aten.linear.default, torch.ops.aten.matmul.default, torch.ops.aten.mm.default,
           torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)  # fmt: skip
    """Under inference mode ``F.linear`` and ``torch.matmul`` reach a dispatch mode undecomposed."""

    def __init__(self):
        super().__init__()
        self.active = False
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.active and func in self.OPS and not kwargs:
            operands = tuple(
                (tuple(a.shape), a.stride(), a.dtype, a.requires_grad)
                if isinstance(a, torch.Tensor)
                else ("value", a)
                for a in args
            )
            self.calls[(func, operands)] += 1
        return func(*args, **(kwargs or {}))

    def record(self, model, run) -> None:
        """Run ``run()`` with the LM's and LM head's products logged."""

        def on(*_):
            self.active = True

        def off(*_):
            self.active = False

        parts = (model.model.language_model, model.lm_head)
        handles = [
            h for part in parts for h in (part.register_forward_pre_hook(on), part.register_forward_hook(off))
        ]
        try:
            with self:
                run()
        finally:
            for handle in handles:
                handle.remove()

    def seconds_alone(self) -> float:
        """Sum over the logged products of count x the median time of that product run by itself.

        Operands are rebuilt with the logged strides and ``requires_grad`` (a weight that requires grad
        lets ``torch.matmul`` fold a strided batch into one product; see the flagship's LM head).
        """
        total = 0.0
        for (func, operands), count in self.calls.items():
            args = [
                value[1]
                if value[0] == "value"
                else torch.empty_strided(*value[:2], dtype=value[2]).normal_().requires_grad_(value[3])
                for value in operands
            ]
            with torch.inference_mode():
                total += count * timed(lambda: func(*args), repeats=5)  # noqa: B023 (called at once)
        return total


class SweepRow(NamedTuple):
    """One batch size of the sweep: what it measured, and the first batch (for the breakdown)."""

    batch_size: int
    samples_per_second: float
    share_of_bf16_rate: float
    images: list
    flops_per_sample: float
    bf16_rate: float


def timed(function, repeats: int = 3) -> float:
    """Median seconds of ``function()`` after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def print_breakdown(
    model, processor, images, prompt, new_tokens: int, flops_per_sample: float, peak: float
) -> None:
    """Where one batch's time goes (processor, vision tower + projector, LM prefill, decoding), and its ceiling."""
    texts = [prompt] * len(images)
    nested = [[im] for im in images]
    batch = processor(images=nested, text=texts, padding="longest", return_tensors="pt")
    pixels = batch["pixel_values"].to(model.dtype)
    preprocess = timed(lambda: processor(images=nested, text=texts, padding="longest", return_tensors="pt"))
    from emtbench.models.flagship.modeling_emt_flagship import VISION_FEATURE_CACHE

    def vision_uncached():
        VISION_FEATURE_CACHE.clear()  # else every repeat after the first times a cache hit
        return model.get_image_features(pixels)

    vision = timed(vision_uncached)
    first_token = timed(lambda: run_batch(model, processor, images, prompt, 1))
    all_tokens = timed(lambda: run_batch(model, processor, images, prompt, new_tokens))
    decode = (all_tokens - first_token) / max(new_tokens - 1, 1)
    prefill = first_token - vision - preprocess
    print(
        f"batch {len(images)} breakdown: processor {preprocess * 1e3:.0f} ms, vision tower + projector "
        f"{vision * 1e3:.0f} ms, LM prefill {prefill * 1e3:.0f} ms, {new_tokens - 1} decode steps x "
        f"{decode * 1e3:.0f} ms (total {all_tokens * 1e3:.0f} ms)"
    )
    log = MatmulLog()
    log.record(model, lambda: run_batch(model, processor, images, prompt, new_tokens))
    matmuls = log.seconds_alone()
    language_model = all_tokens - vision - preprocess
    floor = preprocess + vision + matmuls
    print(
        f"ceiling at batch {len(images)}: the LM's {sum(log.calls.values())} matrix products "
        f"({len(log.calls)} shapes), each timed alone, take {matmuls * 1e3:.0f} ms of its "
        f"{language_model * 1e3:.0f} ms; with processor and vision tower as measured, "
        f"{floor * 1e3:.0f} ms per batch = at most {len(images) * flops_per_sample / floor / peak:.1%} "
        f"of the bf16 matmul rate with this vision tower"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="a saved flagship folder")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random flagship instead")
    parser.add_argument("--batch-sizes", default="1,8,16,32,64")
    parser.add_argument("--samples", type=int, default=64, help="images timed per batch size")
    parser.add_argument("--new-tokens", type=int, default=8, help="EMT answers are ~8 tokens")
    parser.add_argument(
        "--variants",
        default="",
        help=f"also compare these at the best batch size, comma-separated: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--variant-rounds", type=int, default=2, help="interleaved rounds per variant")
    parser.add_argument(
        "--attn-implementation",
        default="emt_eager_gqa",
        help="attention of the batch-size sweep (default: the demo's EMT probes' setting); the variants' "
        "baseline is always transformers' default (SDPA)",
    )
    args = parser.parse_args()

    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import emtbench  # noqa: F401  (registers the flagship Auto classes)

    if args.tiny:
        from emtbench.testing import build_tiny_flagship

        args.model = build_tiny_flagship(Path(tempfile.mkdtemp()) / "tiny-flagship", image_size=224)
    model = AutoModelForImageTextToText.from_pretrained(
        args.model, dtype=torch.bfloat16, attn_implementation=args.attn_implementation
    ).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    print(f"threads: {torch.get_num_threads()}  model: {args.model}  attention: {args.attn_implementation}")
    all_images, prompt = eval_inputs(processor, args.samples)
    rows = []
    with torch.inference_mode():
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            batches = [all_images[i : i + batch_size] for i in range(0, args.samples, batch_size)]
            run_batch(model, processor, batches[0], prompt, args.new_tokens)  # warm-up
            with FlopCounterMode(display=False) as counter:
                run_batch(model, processor, batches[0], prompt, args.new_tokens)
            flops_per_sample = counter.get_total_flops() / len(batches[0])
            meter, elapsed = MatmulMeter(), 0.0
            for images in batches:
                start = time.perf_counter()
                run_batch(model, processor, images, prompt, args.new_tokens)
                took = time.perf_counter() - start
                elapsed += took
                meter.burst(max(took, 0.5))
            peak = meter.rate
            rate = args.samples / elapsed
            achieved = rate * flops_per_sample
            rows.append(SweepRow(batch_size, rate, achieved / peak, batches[0], flops_per_sample, peak))
            print(
                f"batch {batch_size:>3}: {rate:6.2f} samples/s  {flops_per_sample / 1e9:5.1f} GFLOP/sample  "
                f"{achieved / 1e9:6.1f} GFLOP/s = {achieved / peak:6.1%} of the bf16 matmul rate "
                f"({peak / 1e9:.0f} GFLOP/s, 1024^2, interleaved)"
            )
        best = max(rows, key=lambda row: row.samples_per_second)
        print_breakdown(
            model, processor, best.images, prompt, args.new_tokens, best.flops_per_sample, best.bf16_rate
        )
        if args.variants:
            compare_variants(args, processor, all_images, prompt, best.batch_size)
    print(
        f"best: batch {best.batch_size} at {best.samples_per_second:.2f} samples/s; achieved/bf16-matmul = "
        f"{best.share_of_bf16_rate:.1%} "
        f"(target >= 50%); speed-up over batch {rows[0].batch_size}: {best.samples_per_second / rows[0].samples_per_second:.2f}x"
    )


if __name__ == "__main__":
    main()
