"""EMT prompts for vlm-evaluation's models, and a transformers model behind its ``VLM`` interface.

vlm-evaluation asks each model for a prompt function per dataset family
(``vlm.get_prompt_fn("vqa-v2")``); its model classes know only their own families, and their VQA
prompt adds "Answer the question using a single word or phrase.", which would change the EMT probe.
So each family gets the EMT question inside the model's own conversation format and nothing else:

- ``prismatic``: the run's prompt builder, one human turn (what ``--model emtbench-prismatic`` sends);
- ``llava-v15``: LLaVA's conversation template with ``<image>\\n`` and the question;
- ``instruct-blip``: the question alone (InstructBLIP's processor places the query tokens itself).

``emtbench-hf`` (:class:`TransformersVLM`) is any transformers image-text-to-text checkpoint, prompted
and decoded exactly as lm-eval's ``hf-multimodal`` model does with ``--apply_chat_template`` (same
processor call, left padding, greedy decoding to the EMT tasks' token budget, same stop handling), so a
checkpoint gives the same answers through both harnesses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.integrations.vlm_eval.variants import FAMILIES, max_new_tokens

TRANSFORMERS_FAMILY = "emtbench-hf"


def _prismatic_prompt(vlm: Any) -> Callable[[str], str]:
    def prompt_fn(question: str) -> str:
        builder = vlm.get_prompt_builder()
        builder.add_turn(role="human", message=question)
        return builder.get_prompt()

    return prompt_fn


def _llava_prompt(vlm: Any) -> Callable[[str], str]:
    from llava.constants import DEFAULT_IMAGE_TOKEN
    from llava.conversation import conv_templates

    def prompt_fn(question: str) -> str:
        conversation = conv_templates[vlm.conv_mode].copy()
        conversation.append_message(conversation.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}")
        conversation.append_message(conversation.roles[1], None)
        return conversation.get_prompt()

    return prompt_fn


def _question_only(vlm: Any) -> Callable[[str], str]:
    return lambda question: question


EMT_PROMPTS: dict[str, Callable[[Any], Callable[[str], str]]] = {
    "prismatic": _prismatic_prompt,
    "llava-v15": _llava_prompt,
    "instruct-blip": _question_only,
}
"""vlm-evaluation model family -> the EMT prompt function for a loaded model of that family."""


def with_emt_prompts(cls: type, family: str) -> type:
    """A subclass of a vlm-evaluation model class that also answers ``get_prompt_fn("emt-...")``."""
    make_prompt = EMT_PROMPTS[family]

    def get_prompt_fn(self, dataset_family: str = "vqa-v2") -> Callable[[str], str]:
        if dataset_family in FAMILIES:
            return make_prompt(self)
        return cls.get_prompt_fn(self, dataset_family)

    return type(cls.__name__, (cls,), {"get_prompt_fn": get_prompt_fn, "emtbench_prompts": True})


class ImagePassthrough:
    """Hands the image to :class:`TransformersVLM` unchanged (as a uint8 array), as lm-eval hands it
    to the processor: the processor, not the harness, converts and resizes it."""

    emtbench_passthrough = True

    def __call__(self, image, **_: Any):
        import numpy as np
        import torch

        if image.mode not in ("L", "LA", "RGB", "RGBA"):
            image = image.convert("RGB")
        return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))


class TransformersVLM:
    """vlm-evaluation's ``VLM`` interface over ``AutoModelForImageTextToText`` + ``AutoProcessor``.

    Loaded in the checkpoint's own dtype (lm-eval's ``dtype=auto``); vlm-evaluation's
    ``load_precision`` is not applied, so that both harnesses run the same weights.
    """

    def __init__(
        self,
        model_family: str,
        model_id: str,
        run_dir: Path | str | None,
        hf_token: str | None = None,
        trust_remote_code: bool = False,
        **_: Any,
    ) -> None:
        import transformers
        from accelerate import PartialState

        import emtbench.models.flagship  # noqa: F401  (registers the flagship with the Auto classes)

        self.model_family, self.model_id = model_family, model_id
        source = str(run_dir) if run_dir is not None else model_id
        if not source:
            raise EmtbenchError(
                "no checkpoint given", where="--model_dir", fix="pass --model_dir PATH_OR_HUB_ID"
            )
        self.distributed_state = PartialState()
        self.device = self.distributed_state.device
        self.processor = transformers.AutoProcessor.from_pretrained(
            source, token=hf_token or None, trust_remote_code=trust_remote_code
        )
        self.tokenizer = self.processor.tokenizer
        self.model = transformers.AutoModelForImageTextToText.from_pretrained(
            source, token=hf_token or None, dtype="auto", trust_remote_code=trust_remote_code
        )
        self.model.to(self.device).eval()
        self.image_processor = ImagePassthrough()
        self.generate_kwargs: dict[str, Any] = {"do_sample": False, "max_new_tokens": max_new_tokens()}
        image_token_id = getattr(self.model.config, "image_token_id", None) or getattr(
            self.model.config, "image_token_index", None
        )
        self.image_token = self.tokenizer.decode([image_token_id], skip_special_tokens=False)

    def set_generate_kwargs(self, generate_kwargs: dict[str, Any]) -> None:
        self.generate_kwargs = dict(generate_kwargs)

    def get_prompt_builder(self, system_prompt: str | None = None) -> Any:
        raise EmtbenchError("emtbench-hf has no prompt builder", fix="use an EMT dataset family")

    def get_prompt_fn(self, dataset_family: str = "vqa-v2") -> Callable[[str], str]:
        if dataset_family not in FAMILIES:
            raise EmtbenchError(
                f"model family {TRANSFORMERS_FAMILY} only runs the EMT datasets, not {dataset_family!r}",
                where="--dataset.type",
                fix=f"pick one of {', '.join(sorted(FAMILIES))} (their -test or -train-20pct-seed0 ids)",
            )

        def prompt_fn(question: str) -> str:
            if getattr(self.processor, "chat_template", None):
                chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
                return self.processor.apply_chat_template(
                    chat, add_generation_prompt=True, continue_final_message=False
                )
            return f"{self.image_token}{question}"

        return prompt_fn

    def _images(self, pixel_values) -> list:
        from PIL import Image

        images = [Image.fromarray(array.cpu().numpy()) for array in pixel_values]
        if getattr(self.model.config, "model_type", "") == "llava":
            return images  # llava's processor wants one flat list (as lm-eval passes it)
        return [[image] for image in images]

    def generate_answer(
        self, pixel_values, question_prompts: list[str], return_string_probabilities: list[str] | None = None
    ) -> list[str]:
        import torch
        from lm_eval.models.utils import handle_stop_sequences
        from lm_eval.models.utils_hf import stop_sequences_criteria

        if return_string_probabilities is not None:
            raise EmtbenchError("emtbench-hf only generates text", fix="use an EMT dataset family")
        kwargs = dict(self.generate_kwargs)
        budget = int(kwargs.pop("max_new_tokens", max_new_tokens()))
        eos = self.tokenizer.decode(self.tokenizer.eos_token_id, skip_special_tokens=False)
        until = handle_stop_sequences(None, eos=eos)
        padding_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            inputs = self.processor(
                images=self._images(pixel_values),
                text=list(question_prompts),
                truncation=False,
                padding="longest",
                return_tensors="pt",
            )
        finally:
            self.tokenizer.padding_side = padding_side
        inputs = inputs.to(self.device, self.model.dtype)
        length = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_length=length + budget,
                stopping_criteria=stop_sequences_criteria(
                    self.tokenizer, until, length, inputs["input_ids"].shape[0]
                ),
                pad_token_id=self.tokenizer.pad_token_id,
                use_cache=True,
                **kwargs,
            )
        answers = []
        for tokens in output.tolist():
            text = self.tokenizer.decode(tokens[length:], skip_special_tokens=True)
            for term in until:
                if term:
                    text = text.split(term)[0]
            answers.append(text)
        return answers
