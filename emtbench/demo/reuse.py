"""The language probe measured once per set of language-model weights.

``emt_stdlib_ppl`` is text only: its result depends on the language model (decoder, embeddings, head),
its config and tokenizer, and on the evaluation's own options, never on the vision tower or the
projector. A ``linear`` run trains the projector only, so each of its points would recompute the base's
perplexities bit for bit (~20 s of fp32 compute each). Every language result is therefore written with
a fingerprint of what it read; a later stage whose model has the same fingerprint copies that result
and says so, instead of recomputing it. Nothing is assumed from the method's name: the weights decide.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

FINGERPRINT_FILE = "language_weights.json"
"""Written next to each language result: the fingerprint, and for a copy, where it came from."""
NOT_READ_BY_TEXT = ("model.vision_tower.", "model.multi_modal_projector.")
"""Flagship (LLaVA-layout) weights a text-only request never reaches."""


def language_fingerprint(model: Path, evaluation: dict[str, Any]) -> str:
    """SHA-256 over the evaluation's options and the language model's tensors as fp32 values.

    fp32 values, not file bytes: the bf16 base and a fine-tune saved in fp32 with unchanged decoder
    weights hold the same numbers, and the probe evaluates both in fp32.
    """
    import torch
    from safetensors import safe_open

    digest = hashlib.sha256(json.dumps(evaluation, sort_keys=True, default=str).encode())
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    text_config = {
        k: v for k, v in config.get("text_config", config).items() if k not in ("dtype", "torch_dtype")
    }
    digest.update(json.dumps(text_config, sort_keys=True).encode())  # the saved dtype: the values decide
    if (model / "tokenizer.json").is_file():
        tokenizer = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
        for runtime in ("padding", "truncation"):  # a training collator's batch settings, saved with it
            tokenizer.pop(runtime, None)
        digest.update(json.dumps(tokenizer, sort_keys=True).encode())
    if (model / "tokenizer_config.json").is_file():
        digest.update((model / "tokenizer_config.json").read_bytes())
    for shard in sorted(model.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            for key in sorted(handle.keys()):
                if key.startswith(NOT_READ_BY_TEXT):
                    continue
                tensor = handle.get_tensor(key).to(torch.float32).contiguous()
                digest.update(key.encode())
                digest.update(tensor.numpy())
    return digest.hexdigest()


def _comparable(options: Any) -> dict[str, Any]:
    """The evaluation's options without the model path and the output folder (those differ per stage)."""
    from dataclasses import asdict

    record = asdict(options)
    record.pop("output_path", None)
    record["model_args"] = {k: v for k, v in (record.get("model_args") or {}).items() if k != "pretrained"}
    return record


def evaluate_language_once(options: Any, out: Path, *, log=print) -> None:
    """``emtbench.evaluate(options)``, or a copy of a finished stage's result on the same fingerprint."""
    from emtbench.demo.options import MARKER
    from emtbench.tasks.evaluation import evaluate

    model = Path(options.model_args["pretrained"])
    fingerprint = language_fingerprint(model, _comparable(options))
    target = Path(options.output_path)
    for candidate in sorted(out.glob(f"eval-*/{target.name}/{FINGERPRINT_FILE}")):
        stage = candidate.parent.parent
        try:
            recorded = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if recorded.get("fingerprint") != fingerprint or not (stage / MARKER).is_file():
            continue
        source = recorded.get("reused_from") or stage.name
        shutil.copytree(candidate.parent, target, dirs_exist_ok=True)
        (target / FINGERPRINT_FILE).write_text(
            json.dumps({"fingerprint": fingerprint, "reused_from": source}, indent=2) + "\n", encoding="utf-8"
        )
        log(
            f"    language model weights identical to {source}'s: its {', '.join(options.tasks)} result is reused"
        )
        return
    evaluate(options)
    (target / FINGERPRINT_FILE).write_text(
        json.dumps({"fingerprint": fingerprint, "model": str(model)}, indent=2) + "\n", encoding="utf-8"
    )


def reused_from(folder: Path) -> str | None:
    """The stage a language result was copied from, or ``None`` when it was computed here."""
    try:
        return json.loads((folder / FINGERPRINT_FILE).read_text(encoding="utf-8")).get("reused_from")
    except (OSError, ValueError):
        return None
