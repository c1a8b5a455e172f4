"""Run ``emtbench ARGS`` and SIGKILL the process in the middle of a chosen save (a test hook, not product code).

    python tests/kill_at_save.py POINT STEP -- finetune --model ... --output ...

POINT is where the save is cut, STEP the checkpoint (``checkpoint-STEP``) it happens in, or 0 for the
final model folder:

- ``config``: ``config.json`` is opened (so it is 0 bytes) and the process dies: the issue's case;
- ``weights``: half of ``model.safetensors`` is written, then the process dies;
- ``trainer_state``: everything but a half-written ``trainer_state.json``, then the process dies;
- ``final``: the finished model is being written to its hidden staging folder when the process dies.

SIGKILL cannot be caught, so nothing of emtbench's (no ``finally``, no atexit) runs after it, exactly
as with ``kill -9`` or the OOM killer.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, step: int) -> None:
    folder = f"checkpoint-{step}"

    def in_target(path) -> bool:
        text = str(path)
        return (".partial-" in text) if point == "final" else (folder in Path(text).parts)

    if point == "config":
        from transformers import PretrainedConfig

        original_config = PretrainedConfig.to_json_file

        def to_json_file(self, json_file_path, *args, **kwargs):
            if in_target(json_file_path):
                open(json_file_path, "w").close()
                _die()
            return original_config(self, json_file_path, *args, **kwargs)

        PretrainedConfig.to_json_file = to_json_file
    elif point in ("weights", "final"):
        import safetensors.torch

        original_save = safetensors.torch.save_file

        def save_file(tensors, filename, *args, **kwargs):
            if in_target(filename):
                original_save(tensors, filename, *args, **kwargs)
                data = Path(filename).read_bytes()
                Path(filename).write_bytes(data[: len(data) // 2])
                _die()
            return original_save(tensors, filename, *args, **kwargs)

        safetensors.torch.save_file = save_file
        import transformers.modeling_utils as modeling_utils

        if getattr(modeling_utils, "safe_save_file", None) is original_save:
            modeling_utils.safe_save_file = save_file
    elif point == "trainer_state":
        from transformers.trainer_callback import TrainerState

        original_state = TrainerState.save_to_json

        def save_to_json(self, json_path):
            if in_target(json_path):
                original_state(self, json_path)
                text = Path(json_path).read_text()
                Path(json_path).write_text(text[: len(text) // 2])
                _die()
            return original_state(self, json_path)

        TrainerState.save_to_json = save_to_json
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> int:
    separator = sys.argv.index("--")
    point, step = sys.argv[1], int(sys.argv[2])
    install(point, step)
    from emtbench.cli import main as emtbench_main

    return emtbench_main(sys.argv[separator + 1 :])


if __name__ == "__main__":
    sys.exit(main())
