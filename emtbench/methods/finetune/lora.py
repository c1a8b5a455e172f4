"""``lora``: projector plus LoRA on every linear layer of the language model (the continual-learning
paper, App. A.5: rank = hidden/2, alpha 8, rsLoRA, dropout 0.05, no bias; the output head excluded)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.options import option
from emtbench.methods.finetune.base import FinetuneMethod, register_method
from emtbench.methods.finetune.prepare import language_linear_names


@dataclass(frozen=True)
class LoraOptions:
    lora_rank: int | None = option(None, help="LoRA rank (default: LLM hidden size / 2)")
    lora_alpha: float = option(8.0, help="LoRA alpha")
    lora_dropout: float = option(0.05, help="LoRA dropout")
    use_rslora: bool = option(
        True, negative="--no-rslora", help="plain LoRA scaling alpha/r instead of alpha/√r"
    )
    keep_adapter: bool = option(
        False, help="save the peft adapter instead of merging (load with pretrained=BASE,peft=OUTPUT)"
    )


@register_method
class LoraFinetuning(FinetuneMethod):
    name = "lora"
    summary = "projector + LoRA on all LLM linear layers (rank hidden/2, alpha 8, rsLoRA, dropout 0.05)"
    options_class = LoraOptions
    default_learning_rate = 2e-4
    learning_rate_source = "LLaVA-1.5's released LoRA fine-tuning recipe"
    saves_adapter = True

    def check(self, options: Any) -> None:
        if options.lora_rank is not None and options.lora_rank < 1:
            raise EmtbenchError(f"LoRA rank must be at least 1, got {options.lora_rank}", where="--lora-rank")
        if not (math.isfinite(options.lora_alpha) and options.lora_alpha > 0):
            raise EmtbenchError(
                f"--lora-alpha must be a positive number, got {options.lora_alpha}", where="--lora-alpha"
            )
        if not (math.isfinite(options.lora_dropout) and 0 <= options.lora_dropout < 1):
            raise EmtbenchError(
                f"--lora-dropout must be a probability in [0, 1), got {options.lora_dropout}",
                where="--lora-dropout",
            )

    def resolve(self, options: Any, config: Any) -> Any:
        """LoRA rank = the language model's hidden size / 2 unless given."""
        if options.lora_rank is None:
            options = dataclasses.replace(
                options, lora_rank=max(1, config.get_text_config().hidden_size // 2)
            )
        self.check(options)
        return options

    def prepare(self, model: Any, parts: Any, options: Any) -> Any:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise EmtbenchError(
                "LoRA methods need the peft package", fix="pip install 'emtbench[train]'"
            ) from None

        config = LoraConfig(
            r=options.lora_rank,
            lora_alpha=options.lora_alpha,
            lora_dropout=options.lora_dropout,
            use_rslora=options.use_rslora,
            bias="none",
            target_modules=language_linear_names(model),
            # The projector trains fully; saving it with the adapter keeps --keep-adapter complete.
            modules_to_save=list(parts.paths.projector),
        )
        return get_peft_model(model, config)
