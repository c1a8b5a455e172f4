"""``emtbench judge-agreement``: how far can each judge be trusted, and what does it cost?"""

from __future__ import annotations

import argparse

from emtbench.core.errors import EmtbenchError

AGREEMENT_HELP = """\
Re-judge the answers of lm-eval --log_samples files (samples_emt_*.jsonl) with several judges and
print, per judge, accuracy, judge errors, time and LLM calls, and for every pair of judges the share
of answers they agree on (right vs not right) and Cohen's kappa. Answers on which the judges disagree
go to --disagreements (JSON lines: label, answer, each judge's verdict) for a human to read.

Judges and their options (from --metadata, as in `emtbench eval`):
{judges}
(SmolLM2-135M, local_llm's default, is a weak judge: it says "no" to almost everything; use it to try
the pipeline offline, not for numbers you report.)

Example:
  emtbench eval --model hf-multimodal --model_args pretrained=llava-hf/llava-1.5-7b-hf \\
      --tasks emt_cifar10 --apply_chat_template --output_path results/ --log_samples
  emtbench judge-agreement results/*/samples_emt_cifar10_*.jsonl --judges rule,embedding,llm \\
      --metadata '{"judge_model": "gpt-4o-mini"}' --disagreements cifar10_disagreements.jsonl
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from emtbench.judges.base import judges_help

    parser = subparsers.add_parser(
        "judge-agreement",
        help="re-judge logged samples with several judges; print agreement and Cohen's kappa",
        description=AGREEMENT_HELP.replace("{judges}", judges_help()),
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
    from emtbench.core.readers import parse_json

    metadata = parse_json(text, "--metadata", fix='e.g. --metadata \'{"judge_model": "gpt-4o-mini"}\'')
    if not isinstance(metadata, dict):
        raise EmtbenchError(
            "must be a JSON object", where="--metadata", fix='e.g. \'{"judge_cache": "none"}\''
        )
    return metadata


def run_agreement(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.judges.agreement import judge_agreement

    names = [name.strip() for name in args.judges.split(",") if name.strip()]
    report = judge_agreement(
        args.samples, names, metadata=_parse_metadata(args.metadata), disagreements=args.disagreements
    )
    print(report.text())
    print(f"\n{len(report.disagreements)} disagreeing answer(s) written to {args.disagreements}")
    return 0
