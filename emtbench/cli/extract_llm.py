"""``emtbench extract-llm``: the MLLM's language model as a standalone causal-LM checkpoint."""

from __future__ import annotations

import argparse

EXTRACT_HELP = """\
Write the language model inside a multimodal checkpoint (LLaVA-style, transformers format) as a
standalone causal LM with its tokenizer, loadable with AutoModelForCausalLM. Its logits on text-only
input equal those of the language model inside the MLLM, so the language suite can run on it at
full speed with `--model hf` (or vllm) and be compared with the MLLM run through hf-multimodal.

The output folder is written atomically (nothing is left behind on failure) and carries
emtbench_run.json naming the source.

Example:
  emtbench extract-llm models/llava-ft --output models/llava-ft-llm
  emtbench eval --model hf --model_args pretrained=models/llava-ft-llm \\
      --tasks emt_linguistic --batch_size 16 --output_path results/
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract-llm",
        help="save the MLLM's language model as a standalone causal LM (for --model hf / vllm)",
        description=EXTRACT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("mllm_dir", metavar="MLLM_DIR", help="multimodal checkpoint folder (or Hub id)")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to write the causal LM to")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it holds something else (default: refuse)"
    )
    parser.set_defaults(handler=run_extract)


def run_extract(args: argparse.Namespace, extra: list[str]) -> int:
    from emtbench.models.extract import extract_llm

    written = extract_llm(args.mllm_dir, args.output, overwrite=args.overwrite)
    print(f"wrote {written}")
    return 0
