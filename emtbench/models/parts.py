"""Where the vision tower, projector and language model live in each supported architecture.

Fine-tuning, fusion and extraction find model parts only through :func:`model_parts`, so a new
architecture is one entry in :data:`ARCHITECTURE_PARTS` (architectures as data, as mergekit does).
"""

from __future__ import annotations

from dataclasses import dataclass

from emtbench.core.errors import EmtbenchError
from emtbench.core.registry import Registry


@dataclass(frozen=True)
class PartPaths:
    """Dotted attribute paths from the top-level model to each part."""

    vision_tower: str
    projector: tuple[str, ...]
    """One or more modules that map vision features into the LLM (InstructBLIP: Q-Former + projection)."""
    language_model: str
    lm_head: str = "lm_head"
    embeddings: str = ""
    """Input embeddings inside the language model (left at pre-trained values by fusion)."""


ARCHITECTURE_PARTS: Registry[PartPaths] = Registry("architecture")
"""transformers class name -> where its parts live."""
ARCHITECTURE_PARTS.add(
    "LlavaForConditionalGeneration",
    PartPaths(
        vision_tower="model.vision_tower",
        projector=("model.multi_modal_projector",),
        language_model="model.language_model",
        embeddings="model.language_model.embed_tokens",
    ),
)
# InstructBLIP (transformers 5 names): the "projector" is the Q-Former plus its language projection.
# Its learned query_tokens are a bare nn.Parameter, not a module, so they are not listed here
# (fusion and peft resolve projector names with get_submodule); they stay at pre-trained values.
ARCHITECTURE_PARTS.add(
    "InstructBlipForConditionalGeneration",
    PartPaths(
        vision_tower="vision_model",
        projector=("qformer", "language_projection"),
        language_model="language_model.model",
        lm_head="language_model.lm_head",
        embeddings="language_model.model.embed_tokens",
    ),
)
# The offline flagship (emtbench.models.flagship) keeps LLaVA's module names on purpose.
ARCHITECTURE_PARTS.add(
    "EmtFlagshipForConditionalGeneration",
    PartPaths(
        vision_tower="model.vision_tower",
        projector=("model.multi_modal_projector",),
        language_model="model.language_model",
        embeddings="model.language_model.embed_tokens",
    ),
)


@dataclass
class ModelParts:
    vision_tower: object
    projectors: list
    language_model: object
    lm_head: object
    paths: PartPaths


def _get(model, dotted: str):
    module = model
    for name in dotted.split("."):
        module = getattr(module, name)
    return module


def part_paths(model_or_class_name) -> PartPaths:
    name = model_or_class_name if isinstance(model_or_class_name, str) else type(model_or_class_name).__name__
    if name in ARCHITECTURE_PARTS:
        return ARCHITECTURE_PARTS[name]
    raise EmtbenchError(
        f"no part mapping for architecture {name!r}",
        fix=f"supported: {', '.join(sorted(ARCHITECTURE_PARTS))}; add an entry to "
        "emtbench.models.parts.ARCHITECTURE_PARTS naming its vision tower, projector and language model",
    )


def model_parts(model) -> ModelParts:
    paths = part_paths(model)
    return ModelParts(
        vision_tower=_get(model, paths.vision_tower),
        projectors=[_get(model, p) for p in paths.projector],
        language_model=_get(model, paths.language_model),
        lm_head=_get(model, paths.lm_head),
        paths=paths,
    )
