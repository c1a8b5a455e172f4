"""``emtbench-clip``: zero-shot CLIP as an lm-eval model, the vision-encoder baseline of the EMT paper.

It answers each EMT request with the label whose text embedding is most similar (cosine) to the
image's, using the paper's templates (EMT §3.2): ``a photo of the number: "{digit}".`` for digit sets,
``a photo of a {object}.`` otherwise. Its accuracy therefore comes out of the same data, split,
subset, judge and results format as an MLLM's.

How the model knows the label set: every EMT document carries ``emt_task`` (the task that built it),
and lm-eval hands the model each request's document (``Instance.doc``). The model looks the task up
in :func:`emtbench.datasets.emt.get_dataset` — the same registry the prompts and judges use — so
no prompt is parsed and labels cannot drift. Non-EMT tasks are refused with a clear error.

Backends: transformers ``CLIPModel`` (default; ``pretrained`` = Hub id or local folder) and
open_clip (``backend=open_clip``, ``pretrained=hf-hub:ORG/NAME`` or ``ARCH:TAG``; optional extra,
imported only when asked for).

Example::

    emtbench eval --model emtbench-clip --model_args pretrained=openai/clip-vit-large-patch14 \\
        --tasks emt --batch_size 64 --output_path results/
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from emtbench.core.errors import EmtbenchError
from emtbench.datasets.emt import EMTDataset, get_dataset, spoken

NUMBER_TEMPLATE = 'a photo of the number: "{label}".'
OBJECT_TEMPLATE = "a photo of a {label}."
BACKENDS = ("transformers", "open_clip")
logger = logging.getLogger(__name__)


def class_prompts(dataset: EMTDataset) -> list[str]:
    """One text per label, in label-index order, with the paper's template for the dataset's kind."""
    template = NUMBER_TEMPLATE if dataset.kind == "number" else OBJECT_TEMPLATE
    return [template.format(label=spoken(label)) for label in dataset.labels]


def request_dataset(request: Any) -> EMTDataset:
    """The EMT dataset behind an lm-eval request, from its document's ``emt_task``."""
    doc = getattr(request, "doc", None) or {}
    task = doc.get("emt_task") if isinstance(doc, dict) else None
    if task is None:
        raise EmtbenchError(
            f"emtbench-clip only classifies EMT tasks; task {getattr(request, 'task_name', '?')!r} "
            "has no emt_task in its documents",
            where="--tasks",
            fix="run it on emt_* tasks (e.g. --tasks emt or emt_offline)",
        )
    return get_dataset(task)


class _Encoder:
    """Normalised image and text embeddings from one backend."""

    encode_images: Callable[[list], Any]
    encode_texts: Callable[[list[str]], Any]


def _transformers_encoder(pretrained: str, device: str) -> _Encoder:
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    try:
        model = CLIPModel.from_pretrained(pretrained).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(pretrained)
        image_processor = AutoImageProcessor.from_pretrained(pretrained)
    except OSError as error:
        raise EmtbenchError(
            f"cannot load a CLIP model from {pretrained!r}: {error}",
            where="--model_args pretrained",
            fix="pass a Hub id such as openai/clip-vit-large-patch14 or a folder saved with save_pretrained",
        ) from error

    def features(output: Any) -> torch.Tensor:
        tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
        return torch.nn.functional.normalize(tensor.float(), dim=-1)

    encoder = _Encoder()
    encoder.encode_images = lambda images: features(
        model.get_image_features(**image_processor(images=images, return_tensors="pt").to(device))
    )
    encoder.encode_texts = lambda texts: features(
        model.get_text_features(**tokenizer(texts, padding=True, return_tensors="pt").to(device))
    )
    return encoder


def _open_clip_encoder(pretrained: str, device: str) -> _Encoder:  # pragma: no cover - needs open_clip
    import torch

    try:
        import open_clip
    except Exception as error:  # torchvision ops fail to load on some torch builds, not only ImportError
        raise EmtbenchError(
            f"open_clip cannot be imported: {error}",
            where="--model_args backend=open_clip",
            fix="pip install 'emtbench[openclip]' -c constraints.txt, or use the default transformers backend",
        ) from error
    if pretrained.startswith("hf-hub:"):
        model, _, preprocess = open_clip.create_model_and_transforms(pretrained)
        tokenizer = open_clip.get_tokenizer(pretrained)
    else:
        arch, _, tag = pretrained.partition(":")
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag or None)
        tokenizer = open_clip.get_tokenizer(arch)
    model = model.to(device).eval()
    encoder = _Encoder()
    encoder.encode_images = lambda images: torch.nn.functional.normalize(
        model.encode_image(torch.stack([preprocess(i) for i in images]).to(device)).float(), dim=-1
    )
    encoder.encode_texts = lambda texts: torch.nn.functional.normalize(
        model.encode_text(tokenizer(texts).to(device)).float(), dim=-1
    )
    return encoder


@register_model("emtbench-clip")
class CLIPZeroShot(LM):
    """Zero-shot CLIP classifier answering EMT requests with a label name."""

    MULTIMODAL = True

    def __init__(
        self,
        pretrained: str = "openai/clip-vit-large-patch14",
        backend: str = "transformers",
        batch_size: int | str = 32,
        device: str | None = "cpu",
        **unused: Any,
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise EmtbenchError(
                f"unknown CLIP backend {backend!r}",
                where="--model_args backend",
                fix=f"use one of: {', '.join(BACKENDS)}",
            )
        try:
            self.batch_size = int(batch_size)
        except (TypeError, ValueError):
            self.batch_size = 32  # "auto" and friends: a safe default for image encoders
        self.device_name = _usable_device(device)
        self.pretrained = str(pretrained)
        build = _transformers_encoder if backend == "transformers" else _open_clip_encoder
        self.encoder = build(self.pretrained, self.device_name)
        self._label_embeddings: dict[str, Any] = {}

    def label_embeddings(self, dataset: EMTDataset):
        """Normalised text embeddings of the dataset's class prompts, computed once per task."""
        if dataset.task not in self._label_embeddings:
            import torch

            with torch.inference_mode():
                self._label_embeddings[dataset.task] = self.encoder.encode_texts(class_prompts(dataset))
        return self._label_embeddings[dataset.task]

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        import torch

        from emtbench.core.progress import progress_bar

        answers: list[str] = [""] * len(requests)
        by_task: dict[str, list[int]] = {}
        datasets: dict[str, EMTDataset] = {}
        for index, request in enumerate(requests):
            dataset = request_dataset(request)
            datasets[dataset.task] = dataset
            by_task.setdefault(dataset.task, []).append(index)
        bar = progress_bar(
            total=len(requests), desc="CLIP zero-shot", enabled=not (disable_tqdm or self.rank != 0)
        )
        for task, indices in by_task.items():
            dataset, text = datasets[task], self.label_embeddings(datasets[task])
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                images = [_image(requests[i]) for i in chunk]
                with torch.inference_mode():
                    best = (self.encoder.encode_images(images) @ text.T).argmax(dim=-1).tolist()
                for index, label_index in zip(chunk, best, strict=True):
                    answers[index] = dataset.labels[label_index]
                    self.cache_hook.add_partial("generate_until", requests[index].args, answers[index])
                bar.update(len(chunk))
        bar.close()
        return answers

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise EmtbenchError(
            "emtbench-clip only answers generation requests (the EMT tasks)",
            where="--tasks",
            fix="run it on emt_* tasks",
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self.loglikelihood(requests, disable_tqdm)


def _usable_device(device: str | None) -> str:
    """lm-eval's default device is ``cuda``; run on the CPU (and say so) where there is none."""
    import torch

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("emtbench-clip: device %r is not available, using the CPU", device)
        return "cpu"
    return device


def _image(request: Any):
    """The request's single image as RGB (digit and Fashion-MNIST images are greyscale)."""
    visuals = request.args[2].get("visual") if len(request.args) > 2 else None
    if not visuals:
        raise EmtbenchError(
            f"request of task {request.task_name!r} carries no image",
            where="--tasks",
            fix="run emtbench-clip on emt_* tasks, which attach one image per document",
        )
    return visuals[0].convert("RGB")
