"""Language-suite loglikelihoods: the MLLM through hf-multimodal vs its extracted LLM through hf.

Builds a random LLaVA (a mid-size Llama inside), extracts its LLM with `emtbench extract-llm`'s code,
then scores the same text-only loglikelihood requests with lm-eval's HFMultimodalLM and HFLM side by
side in one process, and prints the time of each, their ratio and the largest difference in
log-likelihood (0 when the extraction is exact).

    python scripts/bench_extract_llm.py --requests 64 --hidden 512 --layers 4
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from lm_eval.api.instance import Instance
    from lm_eval.models.hf_vlms import HFMultimodalLM
    from lm_eval.models.huggingface import HFLM

    from emtbench.models.extract import extract_llm
    from emtbench.testing import build_tiny_llava

    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "what",
        "is",
        "object",
        "in",
        "image",
        "number",
        "seven",
        "a",
        "picture",
        "of",
        "fish",
    ]
    rng = random.Random(0)
    requests = [
        Instance(
            "loglikelihood",
            doc={},
            arguments=(" ".join(rng.choices(words, k=rng.randint(8, 40))), " " + rng.choice(words)),
            idx=0,
        )
        for _ in range(args.requests)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        mllm_dir = build_tiny_llava(Path(tmp) / "llava", hidden_size=args.hidden, num_layers=args.layers)
        llm_dir = extract_llm(mllm_dir, Path(tmp) / "llm")
        models = {
            "hf-multimodal": HFMultimodalLM(
                pretrained=str(mllm_dir), device=args.device, batch_size=args.batch_size
            ),
            "hf (extracted)": HFLM(pretrained=str(llm_dir), device=args.device, batch_size=args.batch_size),
        }
        timings: dict[str, float] = {}
        scores: dict[str, list[float]] = {}
        for model in models.values():
            model.loglikelihood(requests[:2], disable_tqdm=True)  # warm-up
        for _ in range(args.rounds):  # interleaved rounds, best of each: less noise from other load
            for name, model in models.items():
                start = time.perf_counter()
                scores[name] = [ll for ll, _ in model.loglikelihood(requests, disable_tqdm=True)]
                timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - start)
    mllm, llm = timings["hf-multimodal"], timings["hf (extracted)"]
    diff = max(abs(a - b) for a, b in zip(scores["hf-multimodal"], scores["hf (extracted)"], strict=True))
    print(
        f"{args.requests} loglikelihood requests (best of {args.rounds} interleaved rounds), Llama hidden {args.hidden} x {args.layers} layers, {args.device}"
    )
    print(f"hf-multimodal (MLLM):   {mllm:8.3f} s")
    print(f"hf (extracted LLM):     {llm:8.3f} s")
    print(f"ratio MLLM / LLM:       {mllm / llm:8.3f}")
    print(f"max |Δ loglikelihood|:  {diff:.3g}")


if __name__ == "__main__":
    main()
