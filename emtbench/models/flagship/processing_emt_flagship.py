"""Processor of the flagship MLLM: CLIP-style image preprocessing + SmolLM2's tokenizer + ``<image>`` expansion."""

from __future__ import annotations

from transformers import ProcessorMixin

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '\n<image>' }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""SmolLM2's ChatML turns with each turn's text first and its images last (``question\n<image>``).

Why images last (LLaVA puts them first): the LM is frozen while the projector aligns, so the image
tokens act as a soft prompt, which steers the answer best right before it; and the question, being
the same for every image of a task, becomes a shared prefix whose key/value cache ``build-base``
computes once instead of at every step (3-4x fewer LM tokens per training example). No default
system prompt: every token costs CPU time, and the instruct model answers well without it."""


class EmtFlagshipProcessor(ProcessorMixin):
    """Expands each ``<image>`` in the text to ``image_seq_length`` placeholder tokens and preprocesses images.

    Accepts images flat or nested one list per sample (lm-eval's ``hf-multimodal`` passes nested lists
    for every model type but ``llava``).
    """

    def __init__(
        self, image_processor=None, tokenizer=None, chat_template=None, image_seq_length: int = 9, **kwargs
    ):
        self.image_token = "<image>"
        self.image_seq_length = image_seq_length
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.image_seq_length


# Hub remote code: ``save_pretrained`` writes ``auto_map`` into the processor config and copies this file.
EmtFlagshipProcessor.register_for_auto_class("AutoProcessor")
