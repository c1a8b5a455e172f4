"""What strict reading costs: emtbench's strict JSON reader against the standard library's json, side by side.

The strict reader (emtbench.core.readers) refuses duplicate keys, NaN/Infinity and absurd nesting,
which costs a Python hook per object and a walk over the result. Measured here on lm-eval-shaped
inputs: a samples file (one ~1 kB record per line, parsed as one document as the leaderboard does) and
a results file, each parsed both ways in one run, best of several repeats.

    python scripts/bench_readers.py [--lines 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import time

from emtbench.core.readers import parse_json


def sample_line(index: int) -> str:
    prompt = (
        "USER: <image>\nWhat is the number in the image? Please only answer a single number in "
        + ", ".join(map(str, range(10)))
        + ". ASSISTANT:"
    )
    record = {
        "doc_id": index,
        "doc": {"image": f"hash-{index:08d}", "label": index % 10, "emt_task": "emt_digits"},
        "target": str(index % 10),
        "arguments": {
            "gen_args_0": {"arg_0": prompt, "arg_1": {"until": [], "max_gen_toks": 64, "do_sample": False}}
        },
        "resps": [[f"The number is {index % 10}."]],
        "filtered_resps": [f"The number is {index % 10}."],
        "filter": "none",
        "metrics": [
            "acc",
            "wrong",
            "intrinsic_hallucination",
            "extrinsic_hallucination",
            "empty",
            "judge_coverage",
        ],
        "doc_hash": "a" * 64,
        "prompt_hash": "b" * 64,
        "target_hash": "c" * 64,
        "acc": float(index % 3 == 0),
        "wrong": float(index % 3 != 0),
        "intrinsic_hallucination": 0.0,
        "extrinsic_hallucination": 0.0,
        "empty": 0.0,
        "judge_coverage": 1.0,
    }
    return json.dumps(record)


def results_text(tasks: int) -> str:
    results = {
        f"task_{i}": {"alias": f"task_{i}", "acc,none": 0.5, "acc_stderr,none": 0.01} for i in range(tasks)
    }
    configs = {
        f"task_{i}": {
            "task": f"task_{i}",
            "metric_list": [{"metric": "acc"}] * 7,
            "metadata": {"version": 1.0},
        }
        for i in range(tasks)
    }
    return json.dumps(
        {"results": results, "configs": configs, "config": {"model": "hf-multimodal"}}, indent=2
    )


def best(function, text: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(text)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    samples = "[" + ",".join(sample_line(i) for i in range(args.lines)) + "]"
    results = results_text(60)
    for label, text in (
        (f"samples file, {args.lines} lines ({len(samples) / 1e6:.1f} MB)", samples),
        (f"results file ({len(results) / 1e3:.0f} kB)", results),
    ):
        plain = best(json.loads, text, args.repeats)
        strict = best(lambda t: parse_json(t, "bench"), text, args.repeats)
        print(
            f"{label:<45} json.loads {plain * 1e3:8.2f} ms   strict {strict * 1e3:8.2f} ms   ratio {strict / plain:5.2f}x"
        )


if __name__ == "__main__":
    main()
