"""Flagship checkpoints load with stock tools where emtbench is not importable (Hub remote code)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LOAD_AND_GENERATE = """
import sys
try:
    import emtbench  # noqa: F401
except ImportError:
    pass
else:
    sys.exit("emtbench was importable: the poison did not work")
import numpy as np
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

folder = sys.argv[1]
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
image = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8"))
messages = [{"role": "user", "content": [{"type": "text", "text": "What digit is this?"}, {"type": "image"}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(text=[text], images=[image], return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
assert out.shape[1] > inputs["input_ids"].shape[1]
print("GENERATED", out.shape[1] - inputs["input_ids"].shape[1])
# the checkpoint's code registers its grouped eager attention with transformers when it loads
grouped = AutoModelForImageTextToText.from_pretrained(
    folder, trust_remote_code=True, attn_implementation="emt_eager_gqa"
)
assert grouped.config.get_text_config()._attn_implementation == "emt_eager_gqa"
again = grouped.generate(**inputs, max_new_tokens=3, do_sample=False)
print("GROUPED SAME", bool((again == out).all()))
"""


@pytest.fixture(scope="module")
def tiny_flagship_dir(tmp_path_factory) -> Path:
    from emtbench.testing import build_tiny_flagship

    return build_tiny_flagship(tmp_path_factory.mktemp("models") / "tiny-flagship")


def without_emtbench(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``import emtbench`` raises (a poisoned package first on the path)."""
    poison = tmp_path / "poison" / "emtbench"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text('raise ImportError("emtbench is deliberately not importable here")\n')
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(poison.parent), HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
    )  # fmt: skip
    return env


def test_checkpoint_carries_its_code(tiny_flagship_dir):
    config = json.loads((tiny_flagship_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_emt_flagship.EmtFlagshipConfig",
        "AutoModelForImageTextToText": "modeling_emt_flagship.EmtFlagshipForConditionalGeneration",
    }
    processor_config = json.loads((tiny_flagship_dir / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_emt_flagship.EmtFlagshipProcessor"}
    for name in (
        "configuration_emt_flagship",
        "modeling_emt_flagship",
        "processing_emt_flagship",
        "efficientnet_lite",
        "grouped_attention",
    ):
        tree = ast.parse((tiny_flagship_dir / f"{name}.py").read_text())
        imported = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
        imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
        assert not [module for module in imported if module.split(".")[0] == "emtbench"], name


def test_loads_and_generates_without_emtbench(tiny_flagship_dir, tmp_path):
    env = without_emtbench(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_GENERATE, str(tiny_flagship_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GENERATED 3" in done.stdout
    assert "GROUPED SAME True" in done.stdout

    # the same folder without auto_map does not load there: the check above is not vacuous
    stripped = tmp_path / "no-auto-map"
    shutil.copytree(tiny_flagship_dir, stripped)
    config = json.loads((stripped / "config.json").read_text())
    del config["auto_map"]
    (stripped / "config.json").write_text(json.dumps(config))
    failed = subprocess.run(
        [sys.executable, "-c", LOAD_AND_GENERATE, str(stripped)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "emt_flagship" in failed.stderr


@pytest.mark.slow
def test_plain_lm_eval_runs_an_emt_task(tiny_flagship_dir, tmp_path):
    """Stock ``lm_eval`` (not ``emtbench eval``) loads the flagship by ``trust_remote_code``.

    lm-eval builds the model before it imports any task code, so emtbench's own registration has not
    run when the checkpoint loads: it loads from the code files the folder carries.
    """
    from emtbench.tasks import TASKS_DIR

    env = dict(os.environ, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf-multimodal",
         "--model_args", f"pretrained={tiny_flagship_dir},trust_remote_code=True",
         "--tasks", "emt_digits", "--limit", "2", "--include_path", str(TASKS_DIR / "emt"),
         "--device", "cpu", "--batch_size", "2", "--output_path", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["n-samples"]["emt_digits"]["effective"] == 2
    assert "acc,none" in results["results"]["emt_digits"]
