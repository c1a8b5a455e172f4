"""``emtbench build-base``: assemble the flagship and align its projector on offline image-text pairs.

LLaVA-1.5's stage 1 (feature alignment): vision tower and LM frozen, only the two-layer projector
trains, on captions that name the image's class. Here the pairs come from the offline datasets'
training splits (scikit-learn digits, Debian Fashion-MNIST), with the EMT question or a short one and
the EMT answer sentence. Two CPU savings, both exact: the frozen vision tower runs once per image
and its pooled features are cached on disk; and the LM head is applied only at answer positions.

Warm start (documented deviation from LLaVA, which starts the projector at random): a logistic
regression probe on the cached features gives class scores; the projector is initialised so that an
image token is roughly the LM's embedding of the predicted class's name. Gradient alignment through
the frozen LM then refines it. Measured so far (300 images/dataset, 10 steps of 8, shared 2-core CPU):
NOT enough -- EMT accuracy 0/40 digits, 8/40 Fashion-MNIST (target 80%); the answers do not yet follow
the EMT answer template, i.e. the projector is under-trained. Known weak spot: the probe is fit on the
grid-mean feature but the projector runs per grid cell. The defaults (1000 images, 60 steps) are untested.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from emtbench.cache import user_cache_dir
from emtbench.errors import EmtbenchError
from emtbench.fsutil import staged_directory

ALIGNMENT_DATASETS = ("digits", "fashion_mnist")
SHORT_QUESTIONS = {"number": "What is the number in the image?", "object": "What is the object in the image?"}
BASE_NAME = "flagship-base"


@dataclass(frozen=True)
class AlignmentOptions:
    """What build-base trains on and how long; part of the cache key of the result."""

    images_per_dataset: int = 1000
    steps: int = 60
    batch_size: int = 8
    learning_rate: float = 2e-4
    image_grid: int = 3
    seed: int = 0
    short_question_share: float = 0.25

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class AlignmentData:
    features: object  # (N, grid*grid, channels) float tensor
    labels: list[int]
    """Global class index: position in :func:`global_classes`."""
    datasets: list[str]
    label_indices: list[int]


def global_classes() -> list[tuple[str, int]]:
    from emtbench.tasks.registry import get_dataset

    return [(name, index) for name in ALIGNMENT_DATASETS for index in range(len(get_dataset(name).labels))]


def _training_images(name: str, count: int, seed: int):
    from emtbench.tasks.data import DataOptions, load_emt_dataset
    from emtbench.tasks.registry import get_dataset

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


def warm_start_projector(model, tokenizer, data: AlignmentData, seed: int) -> float:
    """Initialise the projector from a linear probe (see module docstring); returns the probe's train accuracy."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from emtbench.tasks.registry import get_dataset, spoken

    pooled = data.features.mean(dim=1).numpy()
    mean, std = pooled.mean(0), pooled.std(0) + 1e-6
    probe = LogisticRegression(max_iter=300, C=0.5, random_state=seed).fit((pooled - mean) / std, data.labels)
    accuracy = float(probe.score((pooled - mean) / std, data.labels))
    coef = probe.coef_ / std  # undo the standardisation: scores = x @ coef.T + intercept
    intercept = probe.intercept_ - (mean / std) @ probe.coef_.T
    scores = pooled @ coef.T + intercept
    scale = float(np.mean(scores.max(axis=1)))  # typical winning score -> 1.0 after scaling
    embed = model.get_input_embeddings().weight
    class_names = []
    for name, index in global_classes():
        class_names.append(" " + spoken(get_dataset(name).labels[index]))
    projector = model.model.multi_modal_projector
    with torch.no_grad():
        projector.linear_1.weight.zero_()
        projector.linear_1.bias.zero_()
        projector.linear_1.weight[: probe.classes_.size] = torch.tensor(coef / scale, dtype=torch.float32)
        projector.linear_1.bias[: probe.classes_.size] = torch.tensor(intercept / scale, dtype=torch.float32)
        projector.linear_2.weight.zero_()
        projector.linear_2.bias.zero_()
        for row, cls in enumerate(probe.classes_):
            ids = tokenizer.encode(class_names[int(cls)], add_special_tokens=False)
            projector.linear_2.weight[:, row] = embed[ids].mean(0) / 0.84  # GELU(1) ~= 0.84
    return accuracy


def _example_text(processor, dataset_name: str, label_index: int, short: bool) -> tuple[str, str]:
    from emtbench.tasks.registry import get_dataset

    dataset = get_dataset(dataset_name)
    question = SHORT_QUESTIONS[dataset.kind] if short else dataset.prompt
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
    )
    prompt = prompt.replace(processor.image_token, processor.image_token * processor.image_seq_length)
    return prompt, dataset.answer(label_index) + "<|im_end|>"


def align_projector(model, processor, data: AlignmentData, options: AlignmentOptions) -> list[float]:
    """Train the projector through the frozen LM on (image, question, answer) triples; returns the losses."""
    import torch
    from tqdm.auto import tqdm

    tokenizer = processor.tokenizer
    model.requires_grad_(False)
    projector = model.model.multi_modal_projector
    projector.requires_grad_(True)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=options.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / max(1, options.steps))
    rng = random.Random(options.seed)
    order = list(range(len(data.labels)))
    rng.shuffle(order)
    losses = []
    model.train()
    progress = tqdm(range(options.steps), desc="aligning projector", unit="step")
    for step in progress:
        batch = [order[(step * options.batch_size + i) % len(order)] for i in range(options.batch_size)]
        sequences, label_masks = [], []
        for index in batch:
            prompt, answer = _example_text(
                processor,
                data.datasets[index],
                data.label_indices[index],
                rng.random() < options.short_question_share,
            )
            prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
            answer_ids = tokenizer.encode(answer, add_special_tokens=False)
            sequences.append(prompt_ids + answer_ids)
            label_masks.append([False] * len(prompt_ids) + [True] * len(answer_ids))
        width = max(len(s) for s in sequences)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences])
        attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
        answer_mask = torch.tensor([[False] * (width - len(m)) + m for m in label_masks])
        image_embeds = projector(data.features[batch])
        hidden = model.model(
            input_ids=input_ids, attention_mask=attention, image_embeds=image_embeds
        ).last_hidden_state
        # position t predicts token t+1: keep positions whose next token is an answer token
        predict = answer_mask[:, 1:]
        logits = model.lm_head(hidden[:, :-1][predict])
        loss = torch.nn.functional.cross_entropy(logits.float(), input_ids[:, 1:][predict])
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def build_base(output: Path | None, options: AlignmentOptions, *, overwrite: bool = False) -> Path:
    """Build (or reuse from the cache) the aligned flagship and return its folder."""
    import shutil

    from emtbench.methods.outputs import write_model_dir
    from emtbench.models.flagship.assemble import assemble_flagship

    cached = user_cache_dir() / f"{BASE_NAME}-{options.key()}"
    if not (cached / "config.json").is_file() or overwrite:
        model, processor = assemble_flagship(image_grid=options.image_grid, seed=options.seed)
        data = vision_features(model, processor, options, user_cache_dir() / "features")
        probe_accuracy = warm_start_projector(model, processor.tokenizer, data, options.seed)
        losses = align_projector(model, processor, data, options)

        def save(folder: Path) -> None:
            model.save_pretrained(folder)
            processor.save_pretrained(folder)

        run = {
            "method": "build-base",
            "base_model": "EfficientNet-Lite0 (ImageNet) + SmolLM2-135M-Instruct (GGUF Q4_1, dequantised)",
            "alignment": asdict(options),
            "alignment_datasets": list(ALIGNMENT_DATASETS),
            "probe_train_accuracy": probe_accuracy,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
        }
        write_model_dir(cached, save, run, overwrite=True)
    if output is None:
        return cached
    output = Path(output).expanduser()
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise EmtbenchError(
            f"{output} exists and is not empty", where="--output", fix="pick a new folder or pass --overwrite"
        )
    with staged_directory(output) as staging:
        shutil.copytree(cached, staging, dirs_exist_ok=True)
    return output
