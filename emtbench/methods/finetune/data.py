"""Training conversations for fine-tuning and calibration, and the collator that turns them into batches.

Public contract (other methods rely on it):

* :func:`load_conversations` returns a ``datasets.Dataset`` whose rows are
  ``{"image": PIL.Image | None, "question": str, "answer": str, "followups": [{"question", "answer"}, ...]}``.
  ``image`` is decoded lazily. ``followups`` holds later turns of a multi-turn LLaVA conversation
  (always empty for EMT data). Specs:

  - ``emt:<name>`` (``emt:cifar10``, ``emt:digits``, ...): the EMT dataset's ``split`` loaded through
    :func:`emtbench.datasets.loading.load_emt_dataset` (Hub, local or offline copy, whichever is available),
    turned into the paper's fine-tuning format (EMT App. D.1): question ``What is the object in the image?``
    (``What is the number in the image?`` for digit sets) with the image, answer
    ``The object is a(n) {label}.`` / ``The number is {d}.`` (:meth:`EMTDataset.answer`).
  - a path to a LLaVA-format JSON (or JSON-lines) file: a list of
    ``{"image": "relative/path.jpg", "conversations": [{"from": "human", "value": "<image>\\n..."},
    {"from": "gpt", "value": "..."}, ...]}``; images are resolved against ``image_root`` (default: the
    JSON file's folder); ``<image>`` is removed from the text (the collator places the image itself).

  ``limit`` keeps a seeded random subset of that many rows (in the source's order).

* :class:`ConversationCollator` ``(processor)`` builds model inputs with the processor's chat template
  (user turn = image + question, assistant turn = answer): ``input_ids``, ``attention_mask``,
  ``pixel_values`` (when any row has an image) and ``labels`` that are -100 everywhere except on the
  assistant answer tokens, including the end-of-turn EOS token (appended if the template has none), so
  the loss is computed only on answers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError

IGNORE_INDEX = -100
"""Label value that ``CrossEntropyLoss`` (and our soft-target loss) skip."""

QUESTIONS = {
    "number": "What is the number in the image?",
    "object": "What is the object in the image?",
}
"""Fine-tuning questions of the EMT paper (App. D.1): the prompt without the label list."""


def conversation_features():
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "followups": datasets.List(
                {"question": datasets.Value("string"), "answer": datasets.Value("string")}
            ),
        }
    )


def load_conversations(
    spec: str,
    *,
    image_root: str | None = None,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    prompt: str = "short",
):
    """Rows of ``{"image", "question", "answer", "followups"}`` from ``emt:<name>`` or a LLaVA JSON file.

    ``prompt`` picks the question of ``emt:`` rows: ``short`` (the EMT paper's fine-tuning question)
    or ``eval`` (the task's evaluation prompt with its label list); a JSON file keeps its own questions.
    """
    if limit is not None and limit < 1:
        raise EmtbenchError(f"limit must be a positive number of examples, got {limit}", where=spec)
    if image_root is not None and not Path(image_root).expanduser().is_dir():
        raise EmtbenchError(
            f"{image_root} is not a folder", where="--image-root", fix="pass the folder of the images"
        )
    if prompt not in ("short", "eval"):
        raise EmtbenchError(
            f"unknown training prompt {prompt!r}", where="--train-prompt", fix="use short or eval"
        )
    if spec.startswith("emt:"):
        return _emt_conversations(spec, split, limit, seed, prompt)
    else:
        if prompt != "short":
            raise EmtbenchError(
                f"--train-prompt {prompt} applies to emt: data; {spec} brings its own questions",
                where="--train-prompt",
                fix="drop --train-prompt, or write the questions you want into the JSON file",
            )
        path = Path(spec).expanduser()
        if not path.is_file():
            raise EmtbenchError(
                f"data spec {spec!r} is neither an EMT dataset (emt:<name>) nor an existing file",
                where="--data",
                fix="use e.g. emt:cifar10 or emt:digits, or the path of a LLaVA-format JSON file",
            )
        data = _llava_json_conversations(path, image_root)
    if limit is not None and limit < len(data):
        data = data.select(_seeded_indices(len(data), limit, seed))
    return data


def _emt_conversations(spec: str, split: str, limit: int | None, seed: int, prompt: str = "short"):
    from emtbench.datasets.emt import get_dataset
    from emtbench.datasets.loading import DataOptions, load_emt_dataset

    try:
        dataset = get_dataset(spec)
    except EmtbenchError as error:
        raise EmtbenchError(error.problem, where=f"data spec {spec!r}", fix=error.fix) from None
    data = load_emt_dataset(dataset, DataOptions(split=split))
    if limit is not None and limit < len(data):
        data = data.select(_seeded_indices(len(data), limit, seed))
    # Columns are added whole (no per-row map), so images are never decoded or rewritten here.
    labels = data["label"]
    features = conversation_features()
    data = data.select_columns(["image"])
    question = QUESTIONS[dataset.kind] if prompt == "short" else dataset.prompt
    data = data.add_column("question", [question] * len(labels), feature=features["question"])
    data = data.add_column("answer", [dataset.answer(label) for label in labels], feature=features["answer"])
    return data.add_column("followups", [[] for _ in labels], feature=features["followups"])


def _seeded_indices(length: int, count: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(length), count))


def _read_json_records(path: Path) -> list[dict[str, Any]]:
    from emtbench.core.readers import iter_json_lines, read_json

    fix = "provide a LLaVA-format JSON list of {'image': ..., 'conversations': [...]} records"
    if path.suffix == ".jsonl":
        return [record for _, record in iter_json_lines(path, what="training data", fix=fix)]
    records = read_json(path, what="training data", fix=fix)  # strict: duplicate keys, NaN, UTF-8
    if not isinstance(records, list):
        raise EmtbenchError(
            "expected a JSON list of records", where=str(path), fix="wrap the records in [ ... ]"
        )
    return records


def _llava_json_conversations(path: Path, image_root: str | None):
    import datasets

    root = Path(image_root).expanduser() if image_root else path.parent
    rows = []
    for index, record in enumerate(_read_json_records(path)):
        where = f"{path} record {index}"
        turns = record.get("conversations") if isinstance(record, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            raise EmtbenchError(
                "needs a 'conversations' list of human/gpt turns",
                where=where,
                fix='e.g. "conversations": [{"from": "human", "value": "<image>\\nQ"}, {"from": "gpt", "value": "A"}]',
            )
        pairs = []
        for turn_index in range(0, len(turns) - 1, 2):
            human, gpt = turns[turn_index], turns[turn_index + 1]
            if not (isinstance(human, dict) and isinstance(gpt, dict)) or (
                human.get("from"),
                gpt.get("from"),
            ) != (
                "human",
                "gpt",
            ):
                raise EmtbenchError(
                    f"turns {turn_index} and {turn_index + 1} must be a 'human' turn followed by a 'gpt' turn",
                    where=where,
                    fix="alternate human/gpt turns, starting with human",
                )
            question, answer = human.get("value", ""), gpt.get("value", "")
            if not isinstance(question, str) or not isinstance(answer, str):
                raise EmtbenchError(
                    f"turns {turn_index} and {turn_index + 1}: 'value' must be text, got "
                    f"{type(question).__name__} and {type(answer).__name__}",
                    where=where,
                    fix='e.g. {"from": "gpt", "value": "A cat."}',
                )
            pairs.append({"question": question.replace("<image>", "").strip(), "answer": answer.strip()})
        image = record.get("image")
        image_path = None
        if image is not None and not isinstance(image, str):
            raise EmtbenchError(
                f"'image' must be a relative path, got {type(image).__name__}",
                where=where,
                fix='e.g. "image": "coco/1.jpg"',
            )
        if image:
            image_path = root / str(image)
            if not image_path.is_file():
                raise EmtbenchError(
                    f"image {str(image)!r} not found under {root}",
                    where=where,
                    fix="pass --image-root pointing at the folder the JSON's image paths are relative to",
                )
            image_path = str(image_path)
        rows.append({"image": image_path, **pairs[0], "followups": pairs[1:]})
    if not rows:
        raise EmtbenchError("holds no records", where=str(path), fix="provide at least one conversation")
    _check_images(sorted({row["image"] for row in rows if row["image"]}), path)
    return datasets.Dataset.from_list(rows, features=conversation_features())


def _check_images(paths: list[str], source: Path) -> None:
    """Decode-check every image once before training: a broken one would stop the Trainer mid-run."""
    from emtbench.core.images import check_image
    from emtbench.core.progress import progress_bar

    for image in progress_bar(
        paths, desc="checking training images", unit="image", min_items=2000, leave=False
    ):
        try:
            check_image(image, image)
        except EmtbenchError as error:
            raise EmtbenchError(
                f"cannot read image {image} ({error.problem})", where=str(source), fix=error.fix
            ) from None


def _messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    first_user: list[dict[str, str]] = [{"type": "text", "text": row["question"]}]
    if row.get("image") is not None:
        first_user.insert(0, {"type": "image"})
    messages = [
        {"role": "user", "content": first_user},
        {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]},
    ]
    for turn in row.get("followups") or []:
        messages.append({"role": "user", "content": [{"type": "text", "text": turn["question"]}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn["answer"]}]})
    return messages


def _common_prefix(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


class ConversationCollator:
    """Batch conversation rows for a ``Trainer``: chat-templated inputs, loss only on answer tokens.

    Answer spans are found by rendering each conversation prefix with the chat template and tokenizing
    it (text only, before the processor expands ``<image>``); image expansion happens in the first user
    turn only, so spans counted from the end of the sequence stay valid in the processor's output.
    """

    def __init__(self, processor):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if (
            getattr(processor, "chat_template", None) is None
            and getattr(self.tokenizer, "chat_template", None) is None
        ):
            raise EmtbenchError(
                "the model's processor has no chat template",
                fix="use a model whose processor (or tokenizer) defines chat_template",
            )

    def _render(self, messages: list[dict[str, Any]], *, generation_prompt: bool) -> str:
        # Some processors (InstructBLIP in transformers 5) drop their chat template on load; the
        # tokenizer saved next to them still has it.
        templater = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        return templater.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def text_and_answer_mask(self, row: dict[str, Any]) -> tuple[str, list[bool]]:
        """The full templated text and, per text-only token, whether it is part of an answer."""
        messages = _messages(row)
        full = self._render(messages, generation_prompt=False)
        eos = self.tokenizer.eos_token
        if eos and not full.rstrip().endswith(eos):
            full = full + eos
        full_ids = self._ids(full)
        mask = [False] * len(full_ids)
        for turn in range(1, len(messages), 2):
            start = _common_prefix(self._ids(self._render(messages[:turn], generation_prompt=True)), full_ids)
            if turn + 1 < len(messages):
                end = _common_prefix(
                    self._ids(self._render(messages[: turn + 1], generation_prompt=False)), full_ids
                )
            else:
                end = len(full_ids)
            for position in range(start, end):
                mask[position] = True
        return full, mask

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        texts, masks, images = [], [], []
        for row in rows:
            text, mask = self.text_and_answer_mask(row)
            texts.append(text)
            masks.append(mask)
            if row.get("image") is not None:
                images.append(_as_rgb(row["image"]))
        batch = self.processor(
            text=texts,
            images=images or None,
            padding=True,
            return_tensors="pt",
        )
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for index, mask in enumerate(masks):
            real = batch["attention_mask"][index].nonzero().flatten().tolist()
            # Text-only tokens align with the processor's tokens from the end (image expansion is earlier).
            for offset, is_answer in enumerate(reversed(mask)):
                if is_answer and offset < len(real):
                    position = real[len(real) - 1 - offset]
                    labels[index, position] = batch["input_ids"][index, position]
        batch["labels"] = labels
        return dict(batch)


def _as_rgb(image):
    if isinstance(image, str | Path):
        from emtbench.core.images import open_image

        image = open_image(image, str(image))
    return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image
