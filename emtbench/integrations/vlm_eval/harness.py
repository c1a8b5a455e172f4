"""The EMT harness in vlm-evaluation's shape: index builder, index/map datasets, task runner, scorer.

vlm-evaluation runs every benchmark through four pieces looked up by dataset family (its
``BUILDER_DISPATCH``, ``DATASET2RUNNER`` and ``DATASET2SCORER``): ``build_<x>_indices(root_dir,
slim_dataset_sizes, seed)``, an index dataset, a ``TaskRunner(root_dir, index_file, task_results_dir,
model_id, prompt_fn, image_processor).evaluate(vlm, device_batch_size, num_workers)`` that writes
``results+rank-<i>.json``, and a ``Scorer(dataset_id, task_results_dir, full_results, annotations_file,
...).score(model_id)`` that returns the summary ``scripts/score.py`` stores in ``metrics.json``. These
classes fill those slots for the EMT probes; the data, prompt, decoding budget and judge all come from
emtbench, so results match ``emtbench eval``.

Imported only inside vlm-evaluation's scripts (it needs torch and accelerate, as they do).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.integrations.vlm_eval.index import build_index, check_index, read_index
from emtbench.integrations.vlm_eval.scoring import judge_generations, write_lm_eval_results
from emtbench.integrations.vlm_eval.variants import (
    EMTVariant,
    dataset_for_family,
    generation_settings,
    make_variant,
    max_new_tokens,
    standard_variants,
)

logger = logging.getLogger(__name__)

ACTIVE_VARIANTS: dict[str, EMTVariant] = {}
"""Variants of the dataset configs built in this process, by dataset id.

vlm-evaluation's ``get_task_runner`` and ``get_scorer`` hand a harness only paths and the dataset
id, not the config, so the config (see :mod:`.config`) records its data and judge settings here when
draccus builds it, and the runner and scorer look them up by id.
"""


def local_copy(root_dir: Path, family: str) -> Path | None:
    """``root_dir/download/<family>``, vlm-evaluation's download folder, when a user put a copy there."""
    folder = Path(root_dir) / "download" / family
    return (
        folder if folder.is_dir() and any(p for p in folder.iterdir() if not p.name.startswith(".")) else None
    )


def make_builder(family: str) -> Callable[..., list[Path]]:
    """``build_<family>_indices`` for ``BUILDER_DISPATCH``: the test split and the paper's 20% of train."""

    def build_indices(root_dir: Path, slim_dataset_sizes: Any = None, seed: int = 21) -> list[Path]:
        if slim_dataset_sizes:
            logger.info(
                "%s: EMT subsets are chosen by split/fraction/seed (as `emtbench eval --metadata`), "
                "not by slim sizes; %s ignored",
                family,
                tuple(slim_dataset_sizes),
            )
        data_dir = local_copy(Path(root_dir), family)
        written = []
        for variant in standard_variants(dataset_for_family(family)):
            if data_dir is not None:
                variant = make_variant(family, split=variant.split, fraction=variant.data.fraction,
                                       seed=variant.data.seed, data_dir=data_dir)  # fmt: skip
            written.append(build_index(variant, root_dir))
        return written

    build_indices.__name__ = f"build_{family.replace('-', '_')}_indices"
    return build_indices


def _variant_for(index_file: Path, where: str) -> EMTVariant:
    dataset_id = Path(index_file).parent.name
    if dataset_id not in ACTIVE_VARIANTS:
        raise EmtbenchError(
            f"no EMT dataset config named {dataset_id!r} was built in this process",
            where=where,
            fix="run vlm-evaluation's scripts through `emtbench vlm-eval run` (or call "
            "emtbench.integrations.vlm_eval.register() first) and pick --dataset.type emt-...",
        )
    return ACTIVE_VARIANTS[dataset_id]


class EMTIndexDataset:
    """Metadata only: ``(example_id, question, img_path, label)`` per example (for ``build_index_datasets``)."""

    def __init__(self, root_dir: Path, index_file: Path) -> None:
        self.root_dir = Path(root_dir)
        self.header, self.examples = read_index(root_dir, index_file)

    def __getitem__(self, idx: int) -> tuple[int, str, Path, int]:
        example = self.examples[idx]
        return (
            example["example_id"],
            example["question"],
            self.root_dir / example["img_path"],
            example["label"],
        )

    def __len__(self) -> int:
        return len(self.examples)


class EMTMapDataset:
    """``(example_id, prompt, pixel_values, label)``: the model's prompt and image transform applied."""

    def __init__(
        self, root_dir: Path, index_file: Path, prompt_fn: Callable[[str], str], image_processor: Any
    ):
        self.root_dir, self.prompt_fn, self.image_processor = Path(root_dir), prompt_fn, image_processor
        self.header, self.examples = read_index(root_dir, index_file)

    def _pixels(self, path: Path):
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            if getattr(self.image_processor, "emtbench_passthrough", False):
                return self.image_processor(image)
            image = image.convert("RGB")  # what vlm-evaluation's own harnesses hand their models
        from torchvision.transforms import Compose

        if isinstance(self.image_processor, Compose) or hasattr(self.image_processor, "is_prismatic"):
            return self.image_processor(image)
        return self.image_processor(image, return_tensors="pt")["pixel_values"][0]

    def __getitem__(self, idx: int) -> tuple[int, str, Any, int]:
        example = self.examples[idx]
        pixels = self._pixels(self.root_dir / example["img_path"])
        return example["example_id"], self.prompt_fn(example["question"]), pixels, example["label"]

    def __len__(self) -> int:
        return len(self.examples)


def collate(batch: list[tuple]) -> tuple:
    """Stack what stacks (fixed-size transforms); keep a list of images of different sizes."""
    from torch.utils.data import default_collate

    ids, prompts, pixels, labels = zip(*batch, strict=True)
    try:
        stacked = default_collate(list(pixels))
    except RuntimeError:
        stacked = list(pixels)
    return list(ids), list(prompts), stacked, list(labels)


def _to_device(pixel_values, device):
    if isinstance(pixel_values, dict):
        return {key: value.to(device) for key, value in pixel_values.items()}
    if isinstance(pixel_values, list):
        return [value.to(device) for value in pixel_values]
    return pixel_values.to(device)


class EMTTaskRunner:
    """Generates one answer per EMT example with the EMT decoding budget; writes ``results+rank-<i>.json``."""

    def __init__(
        self,
        root_dir: Path,
        index_file: Path,
        task_results_dir: Path,
        model_id: str,
        prompt_fn: Callable[[str], str],
        image_processor: Any,
    ) -> None:
        from accelerate import PartialState

        self.root_dir, self.index_file = Path(root_dir), Path(index_file)
        self.task_results_dir, self.model_id = Path(task_results_dir), model_id
        self.distributed_state = PartialState()
        self.variant = _variant_for(self.index_file, "--dataset.type")
        with self.distributed_state.main_process_first():
            if not (self.root_dir / self.index_file).is_file():
                build_index(self.variant, self.root_dir)
            check_index(self.variant, self.root_dir)
        os.makedirs(self.task_results_dir, exist_ok=True)
        self.dataset = EMTMapDataset(self.root_dir, self.index_file, prompt_fn, image_processor)

    def evaluate(self, vlm: Any, device_batch_size: int, num_workers: int) -> None:
        from torch.utils.data import DataLoader, DistributedSampler

        from emtbench.core.progress import progress_bar

        settings = generation_settings()
        if hasattr(vlm, "set_generate_kwargs"):
            vlm.set_generate_kwargs(
                {"do_sample": bool(settings["do_sample"]), "max_new_tokens": max_new_tokens()}
            )
        else:
            logger.warning(
                "%s has no set_generate_kwargs: its own decoding settings apply", type(vlm).__name__
            )
        state = self.distributed_state
        sampler = DistributedSampler(
            self.dataset,
            num_replicas=state.num_processes,
            rank=state.process_index,
            shuffle=False,
            drop_last=False,
        )
        loader = DataLoader(
            self.dataset,
            batch_size=device_batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate,
        )
        results: dict[int, dict[str, Any]] = {}
        try:
            for ids, prompts, pixel_values, labels in progress_bar(
                loader, desc=f"=>> {self.variant.dataset_id}", enabled=state.is_main_process
            ):
                answers = vlm.generate_answer(_to_device(pixel_values, state.device), prompts)
                for example_id, prompt, label, answer in zip(ids, prompts, labels, answers, strict=True):
                    results[int(example_id)] = {
                        "example_id": int(example_id),
                        "prompt": prompt,
                        "label": int(label),
                        "model_output": answer,
                    }
        finally:
            path = self.task_results_dir / f"results+rank-{state.process_index}.json"
            path.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
        state.wait_for_everyone()


class EMTScorer:
    """Judges every answer with the run's judge; returns the summary, writes lm-eval results beside it."""

    def __init__(
        self,
        dataset_id: str,
        task_results_dir: Path,
        full_results: dict[str, dict],
        annotations_file: Path,
        questions_file: Path | None = None,
        split: str = "test",
        **_: Any,
    ) -> None:
        self.dataset_id, self.task_results_dir = dataset_id, Path(task_results_dir)
        self.full_results, self.annotations_file = full_results, Path(annotations_file)
        self.variant = _variant_for(self.annotations_file, "--dataset.type")

    def score(self, model_id: str) -> dict[str, float]:
        header, examples = read_index(self.annotations_file.parent, self.annotations_file.name)
        by_id = {str(k): v for k, v in self.full_results.items()}
        missing = [e["example_id"] for e in examples if str(e["example_id"]) not in by_id]
        if missing:
            raise EmtbenchError(
                f"{len(missing)} of {len(examples)} examples have no answer (first: {missing[:5]})",
                where=str(self.task_results_dir),
                fix="rerun scripts/evaluate.py for this dataset and model",
            )
        answers = [by_id[str(e["example_id"])]["model_output"] for e in examples]
        for example in examples:
            if int(by_id[str(example["example_id"])]["label"]) != int(example["label"]):
                raise EmtbenchError(
                    f"example {example['example_id']}: results and index disagree on the label",
                    where=str(self.task_results_dir),
                    fix="the index changed after evaluation: delete the results folder and evaluate again",
                )
        samples = judge_generations(header["task"], examples, answers, self.variant.judge)
        prompts = [by_id[str(e["example_id"])].get("prompt", header["prompt"]) for e in examples]
        for old in [
            *self.task_results_dir.glob("results_*.json"),
            *self.task_results_dir.glob("samples_*.jsonl"),
        ]:
            old.unlink()  # a rescore replaces the previous lm-eval files (one results file per folder)
        write_lm_eval_results(
            self.task_results_dir,
            header["task"],
            samples,
            model=f"vlm-evaluation:{model_id}",
            metadata=self.variant.metadata(),
            prompts=prompts,
            extra={"dataset_id": self.dataset_id, "index_file": str(self.annotations_file)},
        )
        for sample in samples:  # score.py stores these examples in metrics.json: add each verdict
            entry = by_id[str(sample.example["example_id"])]
            entry.update(verdict=sample.judgement.verdict.value, **sample.metrics)
        rates = {name: sum(s.metrics[name] for s in samples) / len(samples) for name in samples[0].metrics}
        summary = {"accuracy": rates.pop("acc"), **rates}
        logger.info(
            "%s on %s: accuracy %.4f over %d examples",
            model_id,
            self.dataset_id,
            summary["accuracy"],
            len(samples),
        )
        return summary
