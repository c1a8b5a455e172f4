"""Convert a Prismatic VLM run directory into a transformers LLaVA checkpoint.

Prismatic (TRI-ML/prismatic-vlms, and the continual-learning fork that trains on it) saves only the
projector and the language model; the vision tower is the pretrained backbone it started from. When
both backbones have a transformers equivalent, the model *is* a LLaVA: vision tower -> second-to-last
layer patch features -> projector -> LLM, with the image features placed right after the BOS token.
Writing it as ``LlavaForConditionalGeneration`` lets every emtbench command (``hf-multimodal``
evaluation, fine-tuning, fusion) run on it with no Prismatic code.

Facts taken from the Prismatic source (docs/design.md §7 and the repository):

- ``config.json`` -> ``model`` holds ``model_id``, ``vision_backbone_id``, ``llm_backbone_id``,
  ``arch_specifier``, ``image_resize_strategy`` (``resize-naive`` | ``resize-crop`` | ``letterbox``)
  and ``llm_max_length``;
- ``checkpoints/latest-checkpoint.pt`` -> ``["model"]`` -> ``projector`` (``projector.weight`` for
  ``linear``; ``projector.0.*`` / ``projector.2.*`` for ``gelu-mlp``) and ``llm_backbone``
  (``llm.`` + the Hugging Face ``*ForCausalLM`` state dict, vocabulary padded to a multiple of 64 after
  adding a pad token);
- vision features are the patch tokens of the second-to-last transformer block (CLS dropped);
- prompts follow the LLM's prompt builder (``In: ...\\nOut:``, Vicuna ``USER: ... ASSISTANT:``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import read_json

CHECKPOINT_RELATIVE_PATH = Path("checkpoints") / "latest-checkpoint.pt"
RESIZE_STRATEGIES = ("resize-naive", "resize-crop", "letterbox")
SUPPORTED_PROJECTORS = ("linear", "gelu-mlp")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class VisionBackboneSpec:
    """A Prismatic vision backbone id and the transformers checkpoint holding the same weights."""

    hub_id: str
    family: str  # "clip" (CLS token dropped) or "siglip" (no CLS token)
    image_size: int

    @property
    def image_mean(self) -> tuple[float, ...]:
        return OPENAI_CLIP_MEAN if self.family == "clip" else SIGLIP_MEAN

    @property
    def image_std(self) -> tuple[float, ...]:
        return OPENAI_CLIP_STD if self.family == "clip" else SIGLIP_STD


@dataclass(frozen=True)
class LLMBackboneSpec:
    """A Prismatic LLM backbone id: its Hub checkpoint, prompt format and the pad token Prismatic added."""

    hub_id: str
    prompt_format: str  # a key of PROMPT_FORMATS
    pad_token: str


@dataclass(frozen=True)
class PromptFormat:
    """One Prismatic prompt builder: text around the first and later user turns and each answer."""

    first_user: str  # "{msg}" is replaced by the user's text
    later_user: str
    assistant: str  # "{msg}" is replaced by the answer; "{eos}" by the EOS token


def _tables() -> dict:
    """The backbone and prompt-format tables (package data: ``backbones.yaml``)."""
    import yaml

    return yaml.safe_load(
        files("emtbench.models.prismatic").joinpath("backbones.yaml").read_text(encoding="utf-8")
    )


_TABLES = _tables()
VISION_BACKBONES: dict[str, VisionBackboneSpec] = {
    name: VisionBackboneSpec(*row) for name, row in _TABLES["vision_backbones"].items()
}
LLM_BACKBONES: dict[str, LLMBackboneSpec] = {
    name: LLMBackboneSpec(*row) for name, row in _TABLES["llm_backbones"].items()
}
PROMPT_FORMATS: dict[str, PromptFormat] = {
    name: PromptFormat(*row) for name, row in _TABLES["prompt_formats"].items()
}


def _jinja_literal(text: str) -> str:
    return json.dumps(text)


def prismatic_chat_template(prompt_format: str, *, bos_in_template: bool) -> str:
    """A Jinja chat template producing Prismatic's prompt, with ``<image>`` right after BOS.

    Prismatic splices the image patches in after the first token (BOS), before any text, and strips
    trailing whitespace from the generation prompt. Tokenizers that do not add BOS themselves (Phi-2,
    Pythia) get it written by the template, as Prismatic's prompt builders do.
    """
    fmt = PROMPT_FORMATS[prompt_format]

    def fill(template: str, var: str) -> str:
        parts = [_jinja_literal(piece) for piece in template.split("{msg}")]
        return f" ~ {var} ~ ".join(parts)

    text_of = (
        "{% if message['content'] is string %}{% set text = message['content'] %}"
        "{% else %}{% set text = namespace(v='') %}"
        "{% for part in message['content'] %}{% if part['type'] == 'text' %}"
        "{% set text.v = text.v ~ part['text'] %}{% endif %}{% endfor %}"
        "{% set text = text.v %}{% endif %}"
        "{% set text = text | replace('<image>', '') | trim %}"
    )
    images_first = (
        "{% set ns = namespace(images=0) %}"
        "{% for message in messages %}{% if message['content'] is not string %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
        "{% set ns.images = ns.images + 1 %}{% endif %}{% endfor %}{% endif %}{% endfor %}"
        "{% if ns.images > 1 %}{{ raise_exception('Prismatic models take one image per conversation') }}{% endif %}"
    )
    bos = "{{ bos_token }}" if bos_in_template else ""
    assistant = fmt.assistant.replace("{eos}", "{{eos}}")
    assistant_expr = fill(assistant, "text").replace("{{eos}}", '" ~ eos_token ~ "')
    return (
        images_first
        + bos
        + "{% if ns.images == 1 %}<image>{% endif %}"
        + "{% set turns = namespace(users=0, out='') %}"
        + "{% for message in messages %}"
        + text_of
        + "{% if message['role'] == 'user' %}"
        + "{% if turns.users == 0 %}{% set piece = "
        + fill(fmt.first_user, "text")
        + " %}{% else %}{% set piece = "
        + fill(fmt.later_user, "text")
        + " %}{% endif %}"
        + "{% set turns.users = turns.users + 1 %}"
        + "{% elif message['role'] == 'assistant' %}{% set piece = "
        + assistant_expr
        + " %}{% else %}{% set piece = '' %}{% endif %}"
        + "{% set turns.out = turns.out ~ piece %}"
        + "{% endfor %}"
        + "{% if add_generation_prompt %}{{ turns.out | trim }}{% else %}{{ turns.out }}{% endif %}"
    )


@dataclass(frozen=True)
class PrismaticRun:
    """What a run directory's ``config.json`` says about the model."""

    run_dir: Path
    model_id: str
    vision_backbone_id: str
    llm_backbone_id: str
    arch_specifier: str
    image_resize_strategy: str
    llm_max_length: int

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT_RELATIVE_PATH


def read_run_config(run_dir: str | Path) -> PrismaticRun:
    """Parse and validate ``RUN_DIR/config.json``; refuse backbones without a transformers twin."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise EmtbenchError(
            f"{run_dir} has no config.json",
            where=str(run_dir),
            fix="pass a Prismatic run directory (it holds config.json and checkpoints/latest-checkpoint.pt)",
        )
    config = read_json(config_path, what="Prismatic run config")
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise EmtbenchError(
            "cannot read the 'model' section (no 'model' object)",
            where=str(config_path),
            fix="a Prismatic config.json has a top-level 'model' object with the backbone ids",
        )
    required = ("vision_backbone_id", "llm_backbone_id", "arch_specifier", "image_resize_strategy")
    missing = [key for key in required if key not in model]
    if missing:
        raise EmtbenchError(
            f"'model' lacks {', '.join(missing)}",
            where=str(config_path),
            fix="this does not look like a Prismatic run config; check the file",
        )
    for key in (*required, "model_id"):
        if key in model and not isinstance(model[key], str):
            raise EmtbenchError(
                f"model.{key} is {model[key]!r}, not a name", where=str(config_path), fix="check the file"
            )
    max_length = model.get("llm_max_length", 2048)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise EmtbenchError(
            f"model.llm_max_length is {max_length!r}, not a positive number of tokens",
            where=str(config_path),
            fix="check the file",
        )
    run = PrismaticRun(
        run_dir=run_dir,
        model_id=str(model.get("model_id", run_dir.name)),
        vision_backbone_id=model["vision_backbone_id"],
        llm_backbone_id=model["llm_backbone_id"],
        arch_specifier=model["arch_specifier"],
        image_resize_strategy=model["image_resize_strategy"],
        llm_max_length=max_length,
    )
    if run.vision_backbone_id not in VISION_BACKBONES:
        raise EmtbenchError(
            f"unsupported vision backbone {run.vision_backbone_id!r}: it has no transformers equivalent "
            "that LLaVA can hold",
            where=f"{config_path}: model.vision_backbone_id",
            fix=f"convertible: {', '.join(VISION_BACKBONES)}; evaluate other runs with "
            "`--model emtbench-prismatic` (needs the prismatic package)",
        )
    if run.llm_backbone_id not in LLM_BACKBONES:
        raise EmtbenchError(
            f"unsupported LLM backbone {run.llm_backbone_id!r}",
            where=f"{config_path}: model.llm_backbone_id",
            fix=f"convertible: {', '.join(LLM_BACKBONES)}; evaluate other runs with "
            "`--model emtbench-prismatic` (needs the prismatic package)",
        )
    if run.arch_specifier not in SUPPORTED_PROJECTORS:
        raise EmtbenchError(
            f"unsupported projector {run.arch_specifier!r}",
            where=f"{config_path}: model.arch_specifier",
            fix=f"convertible: {', '.join(SUPPORTED_PROJECTORS)}",
        )
    if run.image_resize_strategy not in RESIZE_STRATEGIES:
        raise EmtbenchError(
            f"unknown image resize strategy {run.image_resize_strategy!r}",
            where=f"{config_path}: model.image_resize_strategy",
            fix=f"Prismatic uses one of {', '.join(RESIZE_STRATEGIES)}",
        )
    return run


def load_checkpoint_tensors(checkpoint: Path) -> dict[str, dict[str, Any]]:
    """The ``projector`` and ``llm_backbone`` state dicts, loaded as plain tensors only."""
    import pickle

    import torch

    if not checkpoint.is_file():
        raise EmtbenchError(
            f"checkpoint {checkpoint} not found",
            where=str(checkpoint.parent.parent),
            fix=f"a finished Prismatic run has {CHECKPOINT_RELATIVE_PATH}; pass --checkpoint for another file",
        )
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise EmtbenchError(
            "refusing to load a checkpoint that holds more than tensors (it would run arbitrary code "
            f"on load): {str(error).splitlines()[0]}",
            where=str(checkpoint),
            fix="re-save it from Python as {'model': {'projector': sd, 'llm_backbone': sd}} with only tensors",
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise EmtbenchError(
            f"cannot read the checkpoint: {error}", where=str(checkpoint), fix="check the file is complete"
        ) from None
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, dict) or not {"projector", "llm_backbone"} <= set(model):
        raise EmtbenchError(
            "checkpoint lacks ['model']['projector'] and ['model']['llm_backbone']",
            where=str(checkpoint),
            fix="convert the checkpoint of a finetune-stage run (align-stage runs hold only the projector)",
        )
    for part in ("projector", "llm_backbone"):
        state = model[part]
        odd = (
            [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
            if isinstance(state, dict)
            else None
        )
        if odd is None or odd:
            raise EmtbenchError(
                f"['model'][{part!r}] is not a state dict of named tensors"
                + (f" (e.g. {odd[0]!r} is a {type(state[odd[0]]).__name__})" if odd else ""),
                where=str(checkpoint),
                fix="convert the checkpoint Prismatic saved, unmodified",
            )
    return model


def _projector_state(arch_specifier: str, projector: dict[str, Any], llm_dim: int, checkpoint: Path):
    """Prismatic projector tensors as LLaVA's two-layer projector (a linear one gets an identity second layer)."""
    import torch

    def take(key: str):
        if key not in projector:
            raise EmtbenchError(
                f"projector state dict lacks {key!r} (has {sorted(projector)})",
                where=str(checkpoint),
                fix=f"check model.arch_specifier ({arch_specifier!r}) matches the checkpoint",
            )
        return projector[key]

    prefix = "model.multi_modal_projector."
    if arch_specifier == "gelu-mlp":
        return {
            prefix + "linear_1.weight": take("projector.0.weight"),
            prefix + "linear_1.bias": take("projector.0.bias"),
            prefix + "linear_2.weight": take("projector.2.weight"),
            prefix + "linear_2.bias": take("projector.2.bias"),
        }
    weight = take("projector.weight")
    return {
        prefix + "linear_1.weight": weight,
        prefix + "linear_1.bias": take("projector.bias"),
        prefix + "linear_2.weight": torch.eye(llm_dim, dtype=weight.dtype),
        prefix + "linear_2.bias": torch.zeros(llm_dim, dtype=weight.dtype),
    }


def _language_model_state(llm_state: dict[str, Any], text_config, checkpoint: Path) -> dict[str, Any]:
    """Rename ``llm.<CausalLM keys>`` to LLaVA's ``model.language_model.*`` and ``lm_head.*``."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        causal_lm = AutoModelForCausalLM.from_config(text_config)
    base_prefix = causal_lm.base_model_prefix + "."
    head_name = next(
        name for name, module in causal_lm.named_modules() if module is causal_lm.get_output_embeddings()
    )
    renamed: dict[str, Any] = {}
    for key, tensor in llm_state.items():
        if not key.startswith("llm."):
            raise EmtbenchError(
                f"llm_backbone key {key!r} does not start with 'llm.'",
                where=str(checkpoint),
                fix="this is not a Prismatic llm_backbone state dict",
            )
        inner = key.removeprefix("llm.")
        if inner == f"{head_name}.bias":
            if torch.count_nonzero(tensor):
                raise EmtbenchError(
                    f"the LM head has a bias ({key}); transformers' LLaVA head has none, so the "
                    "converted model would not match",
                    where=str(checkpoint),
                    fix="evaluate this run with `--model emtbench-prismatic` instead",
                )
            continue
        if inner.startswith(head_name + "."):
            renamed["lm_head." + inner.removeprefix(head_name + ".")] = tensor
        elif inner.startswith(base_prefix):
            renamed["model.language_model." + inner.removeprefix(base_prefix)] = tensor
        else:
            raise EmtbenchError(
                f"unexpected llm_backbone key {key!r} for a {type(causal_lm).__name__}",
                where=str(checkpoint),
                fix="check model.llm_backbone_id matches the checkpoint",
            )
    return renamed


def _image_processor(spec: VisionBackboneSpec, resize_strategy: str):
    """Preprocessing equal to Prismatic's timm transform for each resize strategy."""
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    size = spec.image_size
    common = {
        "image_mean": list(spec.image_mean),
        "image_std": list(spec.image_std),
        "resample": 3,  # bicubic, as timm's transforms for these towers
        "crop_size": {"height": size, "width": size},
    }
    if resize_strategy == "resize-naive":
        return LlavaImageProcessorPil(size={"height": size, "width": size}, do_center_crop=False, **common)
    return LlavaImageProcessorPil(
        size={"shortest_edge": size},
        do_center_crop=True,
        do_pad=resize_strategy == "letterbox",  # pad to square with the mean colour, as LetterboxPad
        **common,
    )


def _load_tokenizer(source: str, spec: LLMBackboneSpec, llm_max_length: int):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, model_max_length=llm_max_length)
    except OSError as error:
        raise EmtbenchError(
            f"cannot load the tokenizer of {source!r}: {str(error).splitlines()[0]}",
            where="--llm",
            fix="pass --llm with a local folder holding the LLM's tokenizer and config.json",
        ) from None
    tokenizer.add_special_tokens({"pad_token": spec.pad_token})  # as Prismatic did before training
    if "<image>" not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def _tokenizer_adds_bos(tokenizer) -> bool:
    ids = tokenizer("Testing 123").input_ids
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def convert_prismatic(
    run_dir: str | Path,
    output_dir: str | Path,
    *,
    vision_tower: str | None = None,
    llm: str | None = None,
    checkpoint: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a LLaVA checkpoint (model + processor with Prismatic's prompt format) for a Prismatic run.

    ``vision_tower`` and ``llm`` override the Hub ids of the backbones (a local folder keeps the
    conversion offline); the LLM source supplies its config and tokenizer, the weights come from the run.
    """
    import torch
    from transformers import AutoConfig, AutoModel, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from emtbench.core.records import check_output_dir, write_model_dir
    from emtbench.hub.cards import model_card

    step = progress or (lambda message: None)
    run = read_run_config(run_dir)
    vision_spec = VISION_BACKBONES[run.vision_backbone_id]
    llm_spec = LLM_BACKBONES[run.llm_backbone_id]
    vision_source = vision_tower or vision_spec.hub_id
    llm_source = llm or llm_spec.hub_id
    checkpoint_path = Path(checkpoint) if checkpoint else run.checkpoint
    record = {
        "method": "convert-prismatic",
        "base_model": run.model_id,
        "settings": {
            "run_dir": str(run.run_dir.resolve()),
            "checkpoint": str(checkpoint_path),
            "vision_backbone_id": run.vision_backbone_id,
            "vision_tower_source": vision_source,
            "llm_backbone_id": run.llm_backbone_id,
            "llm_source": llm_source,
            "arch_specifier": run.arch_specifier,
            "image_resize_strategy": run.image_resize_strategy,
            "llm_max_length": run.llm_max_length,
            "prompt_format": llm_spec.prompt_format,
        },
    }
    check_output_dir(Path(output_dir), record, overwrite=overwrite)

    step(f"reading {checkpoint_path}")
    state = load_checkpoint_tensors(checkpoint_path)
    llm_state = state["llm_backbone"]

    step(f"loading LLM config and tokenizer from {llm_source}")
    tokenizer = _load_tokenizer(llm_source, llm_spec, run.llm_max_length)
    try:
        text_config = AutoConfig.from_pretrained(llm_source)
    except OSError as error:
        raise EmtbenchError(
            f"cannot load the LLM config of {llm_source!r}: {str(error).splitlines()[0]}",
            where="--llm",
            fix="pass --llm with a local folder holding the LLM's config.json and tokenizer",
        ) from None
    embedding_key = next(
        (k for k in llm_state if k.endswith("embed_tokens.weight") or k.endswith("embed_in.weight")), None
    )
    if embedding_key is None:
        raise EmtbenchError(
            "llm_backbone has no input embedding (embed_tokens / embed_in)",
            where=str(checkpoint_path),
            fix="this is not a Prismatic llm_backbone state dict",
        )
    dtype = llm_state[embedding_key].dtype
    text_config.vocab_size = int(llm_state[embedding_key].shape[0])
    text_config.pad_token_id = tokenizer.pad_token_id
    text_config.tie_word_embeddings = False
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    if max(image_token_id, tokenizer.pad_token_id) >= text_config.vocab_size:
        raise EmtbenchError(
            f"the tokenizer needs {len(tokenizer)} ids but the checkpoint's embedding has "
            f"{text_config.vocab_size} rows",
            where=str(checkpoint_path),
            fix="pass --llm with the tokenizer this run was trained with",
        )

    step(f"loading vision tower from {vision_source}")
    try:
        vision_config = AutoConfig.from_pretrained(vision_source)
        vision_config = getattr(vision_config, "vision_config", vision_config)
        tower = AutoModel.from_pretrained(vision_source, config=vision_config, dtype=dtype)
    except OSError as error:
        raise EmtbenchError(
            f"cannot load the vision tower {vision_source!r}: {str(error).splitlines()[0]}",
            where="--vision-tower",
            fix=f"pass --vision-tower with a local copy of {vision_spec.hub_id}",
        ) from None
    if vision_config.image_size != vision_spec.image_size:
        raise EmtbenchError(
            f"vision tower {vision_source!r} works at {vision_config.image_size} px but "
            f"{run.vision_backbone_id} runs at {vision_spec.image_size} px",
            where="--vision-tower",
            fix=f"use {vision_spec.hub_id}",
        )

    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default" if vision_spec.family == "clip" else "full",
        projector_hidden_act="gelu" if run.arch_specifier == "gelu-mlp" else "linear",
        multimodal_projector_bias=True,
        image_seq_length=(vision_spec.image_size // vision_config.patch_size) ** 2,
        tie_word_embeddings=False,
    )
    config.dtype = dtype

    step("assembling LLaVA weights")
    weights: dict[str, Any] = {}
    weights.update(
        _projector_state(run.arch_specifier, state["projector"], text_config.hidden_size, checkpoint_path)
    )
    weights.update(_language_model_state(llm_state, config.text_config, checkpoint_path))
    weights.update({"model.vision_tower." + key: value for key, value in tower.state_dict().items()})
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise EmtbenchError(
            f"weights do not fit the LLaVA layout: missing {missing[:5]}, unexpected {unexpected[:5]}",
            where=str(checkpoint_path),
            fix="check the backbone ids in config.json match the checkpoint and --llm/--vision-tower",
        )
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    odd = [
        f"{name}: {tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__} "
        f"(expected {shapes[name]})"
        for name, value in sorted(weights.items())
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shapes[name]
    ]
    if odd:
        raise EmtbenchError(
            f"{len(odd)} weight(s) do not fit the model the config describes: {'; '.join(odd[:3])}",
            where=str(checkpoint_path),
            fix="check the backbone ids and arch_specifier in config.json match the checkpoint, and --llm/--vision-tower",
        )
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True, assign=True)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    processor = LlavaProcessor(
        image_processor=_image_processor(vision_spec, run.image_resize_strategy),
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1 if vision_spec.family == "clip" else 0,
        chat_template=prismatic_chat_template(
            llm_spec.prompt_format, bos_in_template=not _tokenizer_adds_bos(tokenizer)
        ),
    )
    record["parameters"] = {"total": sum(v.numel() for v in weights.values())}

    def save(folder: Path) -> None:
        step(f"writing {output_dir}")
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        (folder / "prismatic_run.json").write_text(
            json.dumps({"model": asdict(run) | {"run_dir": str(run.run_dir)}}, indent=2) + "\n"
        )

    return write_model_dir(output_dir, save, record, overwrite=overwrite, card=model_card)
