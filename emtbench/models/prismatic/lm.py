"""lm-eval model ``emtbench-prismatic``: evaluate a Prismatic run with the ``prismatic`` package itself.

For runs whose backbones have no transformers equivalent (DINO+SigLIP fused towers, Gemma, ...) or
to cross-check a conversion. ``prismatic`` is not on PyPI, so it is imported only when this model is
used, with install instructions if it is missing. Generation follows Prismatic's own API: the LLM's
prompt builder formats the question, ``vlm.generate`` runs greedy decoding on one image at a time.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import LM

from emtbench.core.errors import EmtbenchError

INSTALL_FIX = (
    "install it from source: `pip install git+https://github.com/TRI-ML/prismatic-vlms` (it is not on "
    "PyPI; it needs timm and torchvision that work with your torch), or convert the run with "
    "`emtbench convert prismatic RUN_DIR --output HF_DIR` and evaluate HF_DIR with --model hf-multimodal"
)


def import_prismatic_load():
    try:
        from prismatic import load
    except ImportError as error:
        raise EmtbenchError(
            f"the prismatic package is not importable ({error})",
            where="--model emtbench-prismatic",
            fix=INSTALL_FIX,
        ) from None
    return load


class PrismaticLM(LM):
    """Generation-only wrapper around a loaded ``PrismaticVLM`` (one image per request)."""

    MULTIMODAL = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        hf_token: str | None = None,
        max_gen_toks: int = 256,
        **_: Any,
    ) -> None:
        super().__init__()
        load = import_prismatic_load()
        import torch

        self.vlm = load(pretrained, hf_token=hf_token)
        self.vlm.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_gen_toks = int(max_gen_toks)

    def _prompt(self, context: str) -> str:
        builder = self.vlm.get_prompt_builder()
        builder.add_turn("human", context.replace("<image>", "").strip())
        return builder.get_prompt()

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from emtbench.core.progress import progress_bar

        answers = []
        for request in progress_bar(requests, enabled=not disable_tqdm, desc="prismatic generate"):
            context, gen_kwargs, *rest = request.args
            visuals = rest[0].get("visual", []) if rest else []
            if len(visuals) != 1:
                raise EmtbenchError(
                    f"emtbench-prismatic takes exactly one image per request, got {len(visuals)}",
                    where="--tasks",
                    fix="use an image task (e.g. the EMT tasks)",
                )
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or []
            max_new_tokens = int(gen_kwargs.pop("max_gen_toks", self.max_gen_toks))
            text = self.vlm.generate(
                visuals[0].convert("RGB"),
                self._prompt(context),
                do_sample=False,
                max_new_tokens=max_new_tokens,
            )
            for stop in [until] if isinstance(until, str) else until:
                text = text.split(stop)[0]
            answers.append(text)
        return answers

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise EmtbenchError(
            "emtbench-prismatic only generates; it has no loglikelihood",
            where="--model emtbench-prismatic",
            fix="for likelihood tasks, convert the run (`emtbench convert prismatic`) and use hf-multimodal",
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self.loglikelihood(requests, disable_tqdm)
