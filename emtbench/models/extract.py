"""Save the language model inside a multimodal checkpoint as a standalone causal LM.

The language suite then runs at full speed with ``--model hf`` (or vllm) on the result, and "the LLM
inside the MLLM" becomes a checkpoint any causal-LM tool can load. The decoder and output head are
found through :func:`emtbench.models.parts.model_parts`, copied into the ``AutoModelForCausalLM``
class of the MLLM's text config with a strict state-dict load (a missing or extra weight is an
error, not a silent random init), and saved with the MLLM's tokenizer.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.records import write_model_dir
from emtbench.hub.cards import model_card
from emtbench.models.parts import model_parts


def load_mllm(mllm_dir: str | Path):
    """The multimodal model (weights in their saved dtype) and its processor/tokenizer."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    source = str(mllm_dir)
    if Path(source).exists() and not (Path(source) / "config.json").is_file():
        raise EmtbenchError(
            f"{source} has no config.json",
            where="MLLM_DIR",
            fix="pass a transformers checkpoint folder (save_pretrained output), e.g. a LLaVA-style model",
        )
    try:
        model = AutoModelForImageTextToText.from_pretrained(source, dtype="auto")
    except (OSError, ValueError, KeyError) as error:
        raise EmtbenchError(
            f"cannot load {source} as an image-text-to-text model: {error}",
            where="MLLM_DIR",
            fix="pass a LLaVA-style transformers checkpoint (Prismatic runs: `emtbench convert prismatic` first)",
        ) from error
    try:
        processor = AutoProcessor.from_pretrained(source)
        tokenizer = getattr(processor, "tokenizer", processor)
        chat_template = getattr(processor, "chat_template", None)
    except (OSError, ValueError, TypeError):
        tokenizer, chat_template = AutoTokenizer.from_pretrained(source), None
    return model.eval(), tokenizer, chat_template


def _no_init_weights():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def build_causal_lm(mllm) -> Any:
    """A causal LM of the MLLM's text architecture holding exactly its language model and head."""
    import torch
    from transformers import AutoModelForCausalLM

    parts = model_parts(mllm)
    text_config = copy.deepcopy(mllm.config.get_text_config())
    embeddings = parts.language_model.get_input_embeddings()
    head = parts.lm_head
    # Tie only if the MLLM itself shares the matrix, so the saved head is the MLLM's head.
    text_config.tie_word_embeddings = head.weight is embeddings.weight
    text_config.architectures = None
    # No random init (minutes for a 7B model): every weight is assigned from the MLLM below, sharing
    # its tensors instead of copying them, so memory stays at one model.
    with _no_init_weights():
        causal = AutoModelForCausalLM.from_config(text_config, dtype=head.weight.dtype)
    decoder = causal.get_decoder()
    output_head = causal.get_output_embeddings()
    if decoder is None or output_head is None:
        raise EmtbenchError(
            f"{type(causal).__name__} exposes no decoder/output head to copy into",
            fix="add support for this text architecture in emtbench.models.extract",
        )
    try:
        with torch.no_grad():
            decoder.load_state_dict(parts.language_model.state_dict(), strict=True, assign=True)
            if text_config.tie_word_embeddings:
                causal.tie_weights()  # the assigned embedding replaced the one the head pointed to
            else:
                output_head.load_state_dict(head.state_dict(), strict=True, assign=True)
    except RuntimeError as error:
        raise EmtbenchError(
            f"the language model of {type(mllm).__name__} does not fit {type(causal).__name__}: {error}",
            fix="check emtbench.models.parts.ARCHITECTURE_PARTS for this architecture",
        ) from error
    causal.generation_config = copy.deepcopy(mllm.generation_config)
    return causal.eval()


def extract_llm(mllm_dir: str | Path, output_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``output_dir`` (atomically): the causal LM, its tokenizer and an ``emtbench_run.json``."""
    from emtbench.core.progress import progress_bar

    run = {"method": "extract-llm", "base_model": str(mllm_dir), "settings": {}}
    steps = progress_bar(total=3, desc="extract-llm", unit="step")
    steps.set_postfix_str("loading the MLLM")
    mllm, tokenizer, chat_template = load_mllm(mllm_dir)
    steps.update()
    steps.set_postfix_str("copying the language model")
    causal = build_causal_lm(mllm)
    del mllm
    if chat_template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template  # so `--model hf --apply_chat_template` matches the MLLM
    run["parameters"] = {"language_model": sum(p.numel() for p in causal.parameters())}
    run["architecture"] = type(causal).__name__
    steps.update()
    steps.set_postfix_str("saving")

    def save(staging: Path) -> None:
        causal.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    written = write_model_dir(output_dir, save, run, overwrite=overwrite, card=model_card)
    steps.update()
    steps.close()
    return written
