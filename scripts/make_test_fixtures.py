"""Regenerate the checked-in lm-eval output the fast tests read (tests/fixtures/lm_eval_run/).

A real `emtbench eval` run of the tiny random LLaVA that tests/conftest.py builds, on the offline tasks
(--limit 6, --log_samples): one results_*.json and one samples_*.jsonl per task. The fast tier reads
these files instead of running lm-eval; the slow tier's tests/test_eval_e2e.py checks that a fresh run
still gives the same accuracies. Run it after a change that alters what lm-eval writes:

  OMP_NUM_THREADS=1 python scripts/make_test_fixtures.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "tests" / "fixtures" / "lm_eval_run"
EVAL_ARGS = (
    "--model", "hf-multimodal", "--device", "cpu", "--tasks", "emt_digits,emt_fashion_mnist",
    "--limit", "6", "--batch_size", "3", "--apply_chat_template", "--log_samples",
)  # fmt: skip
"""The arguments of tests/conftest.py's ``tiny_eval_results`` (besides the model path and output)."""


def main() -> int:
    from emtbench.cli import main as emtbench
    from emtbench.testing import build_tiny_llava

    with tempfile.TemporaryDirectory() as work:
        model = build_tiny_llava(Path(work) / "tiny-llava")
        out = Path(work) / "out"
        code = emtbench(
            ["eval", *EVAL_ARGS, "--model_args", f"pretrained={model}", "--output_path", str(out)]
        )
        if code != 0:
            return code
        files = sorted(p for p in out.rglob("*") if p.is_file())
        if TARGET.exists():
            shutil.rmtree(TARGET)
        TARGET.mkdir(parents=True)
        for path in files:
            shutil.copy2(path, TARGET / path.name)
    print(f"wrote {len(files)} files to {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
