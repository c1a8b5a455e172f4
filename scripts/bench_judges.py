"""Judge costs, measured side by side in one run and printed as ratios against the issue's targets.

1. rule judge throughput (verdicts/s; target >= 20,000/s);
2. share of LLM calls the cascade saves on a realistic answer mix (target >= 70%);
3. verdict-cache hit rate when the same answers are judged again (target 100%);
4. wall-time ratio of the llm judge at concurrency 8 vs 1 against a server with fixed latency.

LLM calls go over real HTTP to the loopback OpenAI-compatible server of the test suite
(``tests/openai_server.py``), so nothing leaves the machine and no key is needed.

The answer mix is synthetic, modelled on the answer styles the EMT paper reports for fine-tuned
MLLMs: mostly the fine-tuning sentence or a bare label, plus echoed label lists, descriptions,
hedges, negations and stray numbers; the shares are printed with the results.

Usage: python scripts/bench_judges.py [--answers 2000] [--rule-answers 50000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault(
    "TQDM_DISABLE", "1"
)  # progress bars of thousands of judged answers would bury the figures

from openai_server import OpenAIServer

from emtbench.judges import JudgeItem, make_judge
from emtbench.judges.rule import RuleJudge
from emtbench.tasks.registry import get_dataset, spoken

TASKS = ("cifar10", "cifar100", "miniimagenet", "digits", "fashion_mnist")
STYLES: dict[str, float] = {
    "fine-tune sentence": 0.45,
    "bare label": 0.20,
    "echoed label list": 0.08,
    "description": 0.10,
    "hedge (a or b)": 0.07,
    "negation": 0.05,
    "stray number": 0.05,
}
DESCRIPTIONS = (
    "A blurry photograph.", "a picture of something in a box", "an animal standing on grass",
    "It is hard to tell.", "a small object on a white background", "Some kind of vehicle.",
)  # fmt: skip


def answer_mix(count: int, seed: int) -> list[JudgeItem]:
    rng = random.Random(seed)
    items = []
    styles, weights = list(STYLES), list(STYLES.values())
    for _ in range(count):
        dataset = get_dataset(rng.choice(TASKS))
        labels = dataset.labels
        gold = rng.randrange(len(labels))
        predicted_index = gold if rng.random() < 0.6 else rng.randrange(len(labels))
        predicted = spoken(labels[predicted_index])
        other = spoken(rng.choice(labels))
        style = rng.choices(styles, weights)[0]
        if style == "fine-tune sentence":
            answer = dataset.answer(predicted_index)
        elif style == "bare label":
            answer = rng.choice((predicted, predicted.capitalize() + "."))
        elif style == "echoed label list":
            answer = ", ".join(spoken(label) for label in labels[:10])
        elif style == "description":
            answer = rng.choice(DESCRIPTIONS)
        elif style == "hedge (a or b)":
            answer = f"{predicted} or {other}"
        elif style == "negation":
            answer = f"It is not a {other}, it is a {predicted}."
        else:
            answer = f"The {predicted} is {rng.randrange(10)}."
        items.append(JudgeItem(answer, labels[gold], labels, dataset.kind))
    return items


def bench_rule(count: int, seed: int) -> float:
    items = answer_mix(count, seed)
    judge = RuleJudge()
    judge.judge(items[:100])  # warm the per-label-set matcher cache
    start = time.perf_counter()
    judge.judge(items)
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--answers", type=int, default=2000, help="answers in the LLM/cascade/cache runs")
    parser.add_argument("--rule-answers", type=int, default=50000, help="answers in the rule throughput run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ["OPENAI_API_KEY"] = "sk-bench-loopback"

    rate = bench_rule(args.rule_answers, args.seed)
    items = answer_mix(args.answers, args.seed + 1)
    with OpenAIServer(default="yes") as server, tempfile.TemporaryDirectory() as tmp:
        base = {"judge_base_url": server.base_url, "judge_model": "bench", "judge_concurrency": 8}
        llm = make_judge({**base, "judge": "llm", "judge_cache": "none"})
        llm.judge(items)
        cascade = make_judge({**base, "judge": "cascade", "judge_cache": "none"})
        cascade.judge(items)
        saved = 1 - cascade.calls / llm.calls

        cache_file = str(Path(tmp) / "verdicts.sqlite")
        make_judge({**base, "judge": "llm", "judge_cache": cache_file}).judge(items)
        server.reset(default=500)  # a rerun that reached the server would now fail
        rerun = make_judge({**base, "judge": "llm", "judge_cache": cache_file, "judge_max_attempts": 1})
        rerun.judge(items)
        hit_rate = rerun.cache.hits / (rerun.cache.hits + rerun.cache.misses)
        rerun_requests = len(server.requests)

        server.reset(default="yes")
        server.responder = lambda body: time.sleep(0.01) or "yes"  # 10 ms per request
        sample = items[:200]
        timings = {}
        for workers in (1, 8):
            judge = make_judge({**base, "judge": "llm", "judge_cache": "none", "judge_concurrency": workers})
            start = time.perf_counter()
            judge.judge(sample)
            timings[workers] = time.perf_counter() - start

    print("answer mix:", ", ".join(f"{style} {share:.0%}" for style, share in STYLES.items()))
    print(f"rule judge:        {rate:>10,.0f} verdicts/s   ratio to target 20,000/s: {rate / 20000:.2f}x")
    print(
        f"cascade:           {cascade.calls:>5} LLM calls vs {llm.calls} for the llm judge alone "
        f"-> saves {saved:.1%}   ratio to target 70%: {saved / 0.70:.2f}x"
    )
    print(
        f"cache on rerun:    {hit_rate:.1%} hits, {rerun_requests} requests reached the server   "
        f"ratio to target 100%: {hit_rate:.2f}x"
    )
    print(
        f"llm concurrency:   {len(sample)} answers, 10 ms/request: 1 worker {timings[1]:.2f}s, "
        f"8 workers {timings[8]:.2f}s -> {timings[1] / timings[8]:.1f}x faster"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
