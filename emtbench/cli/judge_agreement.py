"""``emtbench judge-agreement``: how far can each judge be trusted, and what does it cost?"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from emtbench.core.errors import EmtbenchError

AGREEMENT_HELP = """\
Re-judge the answers of lm-eval --log_samples files (samples_emt_*.jsonl) with several judges and
print, per judge, accuracy, judge errors, time and LLM calls, and for every pair of judges the share
of answers they agree on (right vs not right) and Cohen's kappa. Answers on which the judges disagree
go to --disagreements (JSON lines: label, answer, each judge's verdict) for a human to read.

Judges: rule, embedding, llm (OpenAI-compatible API), local_llm (local transformers LM), cascade
(rule for clear cases, LLM for the rest). Their options come from --metadata, as in `emtbench eval`:
  llm / cascade: judge_model, judge_base_url, judge_api_key_env (default OPENAI_API_KEY),
                 judge_concurrency, judge_max_attempts, judge_timeout, judge_cache (path or "none")
  local_llm:     judge_model (folder or .gguf; default: offline SmolLM2 package), judge_batch_size
                 (SmolLM2-135M is a weak judge: it says "no" to almost everything; use it to try the
                 pipeline offline, not for numbers you report)
  embedding:     judge_embedding_model, judge_embedding_backend (sentence-transformers | clip)
  cascade:       judge_fallback (llm | local_llm)

Example:
  emtbench eval --model hf-multimodal --model_args pretrained=llava-hf/llava-1.5-7b-hf \\
      --tasks emt_cifar10 --apply_chat_template --output_path results/ --log_samples
  emtbench judge-agreement results/*/samples_emt_cifar10_*.jsonl --judges rule,embedding,llm \\
      --metadata '{"judge_model": "gpt-4o-mini"}' --disagreements cifar10_disagreements.jsonl
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "judge-agreement",
        help="re-judge logged samples with several judges; print agreement and Cohen's kappa",
        description=AGREEMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("samples", nargs="+", metavar="SAMPLES.jsonl", help="lm-eval samples files")
    parser.add_argument(
        "--judges",
        default="rule,embedding",
        help="comma-separated judges to compare (default: rule,embedding)",
    )
    parser.add_argument("--metadata", default="{}", metavar="JSON", help="judge options (see above)")
    parser.add_argument(
        "--disagreements",
        default="judge_disagreements.jsonl",
        metavar="PATH",
        help="where to write the disagreeing answers (default: ./judge_disagreements.jsonl)",
    )
    parser.set_defaults(handler=run_agreement)


def _parse_metadata(text: str) -> dict:
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise EmtbenchError(
            f"not valid JSON: {error}",
            where="--metadata",
            fix='e.g. --metadata \'{"judge_model": "gpt-4o-mini"}\'',
        ) from None
    if not isinstance(metadata, dict):
        raise EmtbenchError(
            "must be a JSON object", where="--metadata", fix='e.g. \'{"judge_cache": "none"}\''
        )
    return metadata


def run_agreement(args: argparse.Namespace, extra: list[str]) -> int:
    from itertools import combinations

    from tqdm.auto import tqdm

    from emtbench.judges.agreement import (
        build_judges,
        compare,
        disagreement_records,
        format_report,
        load_samples,
        run_judge,
    )
    from emtbench.judges.base import judge_option_keys

    names = [name.strip() for name in args.judges.split(",") if name.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise EmtbenchError(
            f"need at least two different judges, got {args.judges!r}",
            where="--judges",
            fix="e.g. --judges rule,embedding,llm",
        )
    metadata = _parse_metadata(args.metadata)
    unknown = sorted(set(metadata) - judge_option_keys())
    if unknown:
        raise EmtbenchError(
            f"unknown judge option(s) {', '.join(map(repr, unknown))}",
            where="--metadata",
            fix=f"judges accept: {', '.join(sorted(judge_option_keys() - {'judge'}))}",
        )
    samples = load_samples(args.samples)
    judges = build_judges(names, metadata)  # fails on bad options before any judging starts
    items = [sample.item for sample in samples]
    runs = []
    for name in tqdm(names, desc="judges", unit="judge"):
        runs.append(run_judge(name, judges[name], items))
    pairs = [compare(a, b) for a, b in combinations(runs, 2)]
    records = disagreement_records(samples, runs)
    _write_jsonl_atomically(Path(args.disagreements), records)
    print(format_report(runs, pairs, len(samples)))
    print(f"\n{len(records)} disagreeing answer(s) written to {args.disagreements}")
    return 0


def _write_jsonl_atomically(path: Path, records: list[dict]) -> None:
    """Write to a temporary file beside ``path`` and rename, so a failure leaves no partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
