"""Hub model cards for emtbench checkpoints, built with huggingface_hub's ModelCard / ModelCardData / EvalResult.

:func:`model_card` is what every method writes (``write_model_dir(..., card=model_card)``): metadata the
Hub reads (``base_model``, ``library_name``, ``pipeline_tag``, ``datasets``, ``license``, ``tags``) and
how the folder was made (command, versions). :func:`write_card` (``emtbench card DIR --results ...``)
adds what the model forgot: accuracies, Δ against the base and the H-score, with bootstrap intervals,
in the text and in the ``model-index``. The forgetting summary is kept in ``emtbench_card.json`` so
that regenerating the card (``emtbench push``) keeps it.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import read_json
from emtbench.core.records import CARD_FILE, RUN_FILE

FORGETTING_START = "<!-- emtbench:forgetting:start -->"
FORGETTING_END = "<!-- emtbench:forgetting:end -->"
SUMMARY_FILE = "emtbench_card.json"
PIPELINE_TAG = "image-text-to-text"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

EMT_HUB_DATASETS = {
    "mnist": "ylecun/mnist",
    "cifar10": "uoft-cs/cifar10",
    "cifar100": "uoft-cs/cifar100",
    "fashion_mnist": "zalando-datasets/fashion_mnist",
    "miniimagenet": "timm/mini-imagenet",
}
"""Hub ids of the EMT datasets that live on the Hub (scikit-learn digits does not)."""

BASE_HUB_IDS = {
    "build-base": ["HuggingFaceTB/SmolLM2-135M-Instruct"],
}
"""Hub ids of the parts a method builds from when its ``base_model`` is a description, not a repo."""

_invocation: list[str] | None = None


def record_invocation(argv: list[str]) -> None:
    """Remember the ``emtbench`` command line being run (called by the CLI), for the card."""
    global _invocation
    _invocation = ["emtbench", *argv]


def command_line(record: dict[str, Any]) -> str | None:
    """The exact command that made the folder: the record's, else the running ``emtbench`` command."""
    from emtbench.core.secrets import redact_text

    if record.get("command"):
        return redact_text(str(record["command"]))
    return redact_text(shlex.join(_invocation)) if _invocation else None  # a card is public


def is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and bool(HUB_ID.match(value)) and not Path(value).expanduser().exists()


def _cache_repo_id(path: Path) -> str | None:
    """``owner/name`` of a folder inside the HF cache (``models--owner--name/snapshots/SHA``)."""
    for part in path.resolve().parts:
        if part.startswith("models--"):
            pieces = part[len("models--") :].split("--")
            if len(pieces) == 2:
                return "/".join(pieces)
    return None


def _front_matter(folder: Path) -> dict[str, Any]:
    card = folder / CARD_FILE
    if not card.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(card).data.to_dict()
    except Exception:  # an unreadable card of someone else's model: just no metadata from it
        return {}


def base_hub_ids(record: dict[str, Any]) -> list[str]:
    """The base model's Hub id(s): itself, or what a local base folder records (run record, card, cache)."""
    base = record.get("base_model")
    if record.get("base_hub_id"):
        return [str(record["base_hub_id"])]
    if is_hub_id(base):
        return [str(base)]
    if record.get("method") in BASE_HUB_IDS:
        return list(BASE_HUB_IDS[record["method"]])
    if isinstance(base, str) and Path(base).expanduser().is_dir():
        folder = Path(base).expanduser()
        run_file = folder / RUN_FILE
        if run_file.is_file():
            run = read_json(run_file, what="run record")
            if isinstance(run, dict) and run.get("hub_id"):
                return [str(run["hub_id"])]
        cached = _cache_repo_id(folder)
        if cached:
            return [cached]
        if run_file.is_file() and isinstance(run, dict):
            return base_hub_ids(run)  # the local base is itself an emtbench output: its base
    return []


def base_license(record: dict[str, Any]) -> str | None:
    """The license of a local base folder's card, where it states one."""
    base = record.get("base_model")
    if isinstance(base, str) and Path(base).expanduser().is_dir():
        value = _front_matter(Path(base).expanduser()).get("license")
        return value if isinstance(value, str) else None
    return record.get("license")


def training_datasets(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(Hub dataset ids, emtbench task names) of the data a run trained or calibrated on."""
    data = record.get("data") or {}
    specs = [data.get("train"), *(data.get("rehearsal") or []), *(data.get("calibration") or [])]
    hub, tasks = [], []
    for spec in specs:
        if isinstance(spec, str) and spec.startswith("emt:"):
            name = spec[4:]
            tasks.append(f"emt_{name}")
            if name in EMT_HUB_DATASETS:
                hub.append(EMT_HUB_DATASETS[name])
    return sorted(set(hub)), tasks


# ---------------------------------------------------------------------- forgetting results


@dataclass
class TaskScore:
    task: str
    accuracy: float
    """In %."""
    interval: tuple[float, float] | None
    samples: int | None
    base_accuracy: float | None = None
    delta: float | None = None
    """base − model, points: positive = forgotten."""
    delta_interval: tuple[float, float] | None = None


@dataclass
class ForgettingSummary:
    tasks: list[TaskScore]
    target: list[str] = field(default_factory=list)
    h_score: float | None = None
    h_interval: tuple[float, float] | None = None
    base_h_score: float | None = None
    interval_note: str = (
        "95% percentile bootstrap; Δ intervals are paired (base and model resampled on the same images, "
        "matched by doc_id), or independent where the two were not scored on the same images"
    )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ForgettingSummary:
        tasks = [
            TaskScore(
                **{
                    **t,
                    "interval": _pair(t.get("interval")),
                    "delta_interval": _pair(t.get("delta_interval")),
                }
            )
            for t in value["tasks"]
        ]
        return cls(tasks, list(value.get("target", [])), value.get("h_score"), _pair(value.get("h_interval")),
                   value.get("base_h_score"))  # fmt: skip


def _pair(value: Any) -> tuple[float, float] | None:
    return (float(value[0]), float(value[1])) if value else None


def read_lm_eval_results(path: str | Path) -> dict[str, tuple[float, Any]]:
    """task -> (accuracy %, per-sample scores with doc ids or None) from an lm-eval output folder or results file."""
    from emtbench.metrics import read_samples

    path = Path(path)
    fix = "pass an lm-eval --output_path folder (or one results_*.json) written with --log_samples"
    files = sorted(path.rglob("results_*.json"), key=lambda p: p.name) if path.is_dir() else [path]
    if not files or not files[-1].is_file():
        raise EmtbenchError(f"no lm-eval results_*.json in {path}", where=str(path), fix=fix)
    results_file = files[-1]
    data = read_json(results_file, what="lm-eval results", fix=fix)
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise EmtbenchError(
            "not an lm-eval results file (no 'results' object)", where=str(results_file), fix=fix
        )
    groups = {name for name, subtasks in (data.get("group_subtasks") or {}).items() if subtasks}
    stamp = results_file.stem[len("results_") :]
    found: dict[str, tuple[float, Any]] = {}
    for task, metrics in sorted(data["results"].items()):
        if task in groups or not isinstance(metrics, dict):
            continue
        keys = sorted(k for k in metrics if k.startswith("acc,") and not k.startswith("acc_stderr"))
        if not keys:
            continue
        key = "acc,none" if "acc,none" in keys else keys[0]
        value = metrics[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        samples_file = results_file.parent / f"samples_{task}_{stamp}.jsonl"
        scores = read_samples(samples_file, "acc", key.split(",", 1)[1]) if samples_file.is_file() else None
        found[task] = (100.0 * float(value), scores)
    if not found:
        raise EmtbenchError("the results hold no task with an 'acc' metric", where=str(results_file), fix=fix)
    return found


def _scores_only(found: dict[str, tuple[float, Any]]) -> dict[str, tuple[float, Any]]:
    return {
        task: (acc, None if samples is None else samples.scores) for task, (acc, samples) in found.items()
    }


def _delta_interval(base: Any, run: Any) -> tuple[float, float]:
    """Paired when both were scored on the same documents (doc_id), else independent resampling."""
    from emtbench.metrics import align_by_doc_id, delta_ci, paired_delta_ci

    try:
        pairs = align_by_doc_id(base.doc_ids, run.doc_ids)
    except EmtbenchError:
        return delta_ci([base.scores], [run.scores])
    return paired_delta_ci(base.scores[pairs.base_index], run.scores[pairs.run_index])


def forgetting_summary(
    results: str | Path, base_results: str | Path | None = None, *, target: list[str] | None = None
) -> ForgettingSummary:
    """Accuracies (and Δ against the base) with bootstrap intervals; the H-score when ``target`` is known.

    ``target``: the tasks the model was trained for (A_t); every other task is an original one (A_o).
    """
    import numpy as np

    from emtbench.metrics import bootstrap_ci, bootstrap_statistic_ci, tailor_scores

    samples = read_lm_eval_results(results)
    model = _scores_only(samples)
    base_samples = read_lm_eval_results(base_results) if base_results is not None else {}
    base = _scores_only(base_samples)
    tasks = []
    for task, (acc, scores) in model.items():
        entry = TaskScore(task, acc, bootstrap_ci(scores) if scores is not None and len(scores) else None,
                          len(scores) if scores is not None else None)  # fmt: skip
        if task in base:
            base_acc, base_scores = base[task]
            entry.base_accuracy = base_acc
            entry.delta = base_acc - acc
            if scores is not None and base_scores is not None and len(scores) and len(base_scores):
                entry.delta_interval = _delta_interval(base_samples[task][1], samples[task][1])
        tasks.append(entry)
    summary = ForgettingSummary(tasks)
    target = [t for t in (target or []) if t in model]
    original = [t for t in model if t not in target]
    if target and original:
        summary.target = target
        summary.h_score = tailor_scores({t: model[t][0] for t in model}, original, target).h_score
        if all(model[t][1] is not None and len(model[t][1]) for t in model):
            order = [*original, *target]
            split = len(original)

            def h_rows(acc: np.ndarray) -> np.ndarray:
                a_o, a_t = acc[:, :split].mean(axis=1), acc[:, split:].mean(axis=1)
                return np.where((a_o > 0) & (a_t > 0), 2 * a_o * a_t / np.maximum(a_o + a_t, 1e-12), 0.0)

            summary.h_interval = bootstrap_statistic_ci([model[t][1] for t in order], h_rows)
        if all(t in base for t in model):
            summary.base_h_score = tailor_scores({t: base[t][0] for t in model}, original, target).h_score
    return summary


def _eval_results(summary: ForgettingSummary) -> list[Any]:
    from huggingface_hub import EvalResult

    out = []
    for t in summary.tasks:
        common = {"task_type": PIPELINE_TAG, "task_name": "EMT image classification", "dataset_type": f"emtbench/{t.task}",
                  "dataset_name": t.task, "dataset_split": "test"}  # fmt: skip
        args = {"ci95": list(t.interval)} if t.interval else None
        out.append(
            EvalResult(
                **common,
                metric_type="accuracy",
                metric_name="Accuracy (%)",
                metric_value=round(t.accuracy, 2),
                metric_args=args,
            )
        )
        if t.delta is not None:
            args = {"ci95": list(t.delta_interval)} if t.delta_interval else None
            out.append(EvalResult(**common, metric_type="emtbench/delta", metric_name="Δ vs base (points, + = forgotten)",
                                  metric_value=round(t.delta, 2), metric_args=args))  # fmt: skip
    if summary.h_score is not None:
        args = {"ci95": list(summary.h_interval)} if summary.h_interval else None
        out.append(EvalResult(task_type=PIPELINE_TAG, task_name="EMT image classification", dataset_type="emtbench/emt",
                              dataset_name="EMT suite", metric_type="emtbench/h-score",
                              metric_name="H-score (target vs original tasks)", metric_value=round(summary.h_score, 2),
                              metric_args=args))  # fmt: skip
    return out


def _interval(pair: tuple[float, float] | None) -> str:
    return f"[{pair[0]:.1f}, {pair[1]:.1f}]" if pair else "—"


def forgetting_markdown(summary: ForgettingSummary | None) -> str:
    if summary is None:
        return "Not evaluated yet. Run `emtbench eval` on this folder, then `emtbench card DIR --results RESULTS --base-results BASE_RESULTS`."
    has_base = any(t.delta is not None for t in summary.tasks)
    head = "| Task | Accuracy (%) | 95% CI | n |" + (
        " Base (%) | Δ (points) | Δ 95% CI |" if has_base else ""
    )
    rule = "|---|---:|---|---:|" + ("---:|---:|---|" if has_base else "")
    rows = []
    for t in summary.tasks:
        row = f"| {t.task}{' (target)' if t.task in summary.target else ''} | {t.accuracy:.1f} | {_interval(t.interval)} | {t.samples or '—'} |"
        if has_base:
            base = f"{t.base_accuracy:.1f}" if t.base_accuracy is not None else "—"
            delta = f"{t.delta:+.1f}" if t.delta is not None else "—"
            row += f" {base} | {delta} | {_interval(t.delta_interval)} |"
        rows.append(row)
    lines = [head, rule, *rows, ""]
    if summary.h_score is not None:
        line = f"H-score (target {', '.join(summary.target)} vs the other tasks): **{summary.h_score:.1f}** {_interval(summary.h_interval)}"
        if summary.base_h_score is not None:
            line += f"; the base: {summary.base_h_score:.1f}"
        lines += [line, ""]
    lines += [
        "Δ = base accuracy − this model's (positive = forgotten). Intervals: " + summary.interval_note + "."
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- the card


def card_data(record: dict[str, Any], *, name: str, summary: ForgettingSummary | None = None) -> Any:
    from huggingface_hub import ModelCardData

    hub_datasets, _ = training_datasets(record)
    method = str(record.get("method", "unknown"))
    adapter = bool(record.get("load_with")) or bool((record.get("settings") or {}).get("keep_adapter"))
    base_ids = base_hub_ids(record)
    data = ModelCardData(
        base_model=(base_ids[0] if len(base_ids) == 1 else base_ids) or None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=PIPELINE_TAG,
        datasets=hub_datasets or None,
        license=base_license(record),
        tags=["emtbench", method, "catastrophic-forgetting"],
        model_name=name,
        eval_results=_eval_results(summary) if summary and summary.tasks else None,
    )
    return data


def render_card(
    record: dict[str, Any], *, name: str | None = None, summary: ForgettingSummary | None = None
) -> str:
    """The card's text (YAML front matter + body) for a run record."""
    from huggingface_hub import ModelCard

    method = str(record.get("method", "unknown"))
    base = record.get("base_model", "unknown")
    base_ids = base_hub_ids(record)
    base_label = ", ".join(base_ids) if base_ids else (Path(str(base)).name if base else "unknown")
    name = name or record.get("hub_id") or f"{method} of {base_label}"
    settings = json.dumps(record.get("settings", {}), indent=2, sort_keys=True, default=str)
    versions = record.get("versions") or {}
    command = command_line(record)
    lines = [
        f"# {name}",
        "",
        f"A **{method}** checkpoint of {', '.join(f'[{b}](https://huggingface.co/{b})' for b in base_ids) or f'`{base_label}`'}, made with "
        "[emtbench](https://github.com/emtbench/emtbench), which measures what fine-tuning a multimodal LLM made it forget.",
        "",
    ]
    if record.get("load_with"):
        base_ref = base_ids[0] if len(base_ids) == 1 else base_label
        lines += ["This is a peft adapter. Evaluate it on its base with lm-eval:", "",
                  f"`--model hf-multimodal --model_args pretrained={base_ref},peft={name}`", ""]  # fmt: skip
    else:
        lines += ["```python", "from transformers import AutoModelForImageTextToText, AutoProcessor",
                  f'model = AutoModelForImageTextToText.from_pretrained("{name}", trust_remote_code=True)',
                  f'processor = AutoProcessor.from_pretrained("{name}", trust_remote_code=True)', "```", ""]  # fmt: skip
    lines += ["## Forgetting results", "", FORGETTING_START, forgetting_markdown(summary), FORGETTING_END, ""]
    lines += ["## How it was made", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    if versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())), ""]
    lines += ["Settings:", "", "```json", settings, "```", ""]
    if record.get("data"):
        lines += ["Data:", "", f"`{json.dumps(record['data'], default=str)}`", ""]
    if "parameters" in record:
        lines += ["Parameters:", "", *[f"- {k}: {v}" for k, v in sorted(record["parameters"].items())], ""]
    lines += [f"The full record is in `{RUN_FILE}`.", ""]
    card = ModelCard(
        f"---\n{card_data(record, name=name, summary=summary).to_yaml()}\n---\n\n" + "\n".join(lines)
    )
    return str(card)


def model_card(record: dict[str, Any]) -> str:
    """The card every method writes with its folder (no results yet)."""
    return render_card(record)


def write_card(
    folder: str | Path,
    *,
    results: str | Path | None = None,
    base_results: str | Path | None = None,
    name: str | None = None,
    target: list[str] | None = None,
) -> Path:
    """(Re)write ``folder/README.md`` from its run record, with forgetting results when given.

    ``results`` / ``base_results``: lm-eval outputs of this model and of its base (``--log_samples`` for
    intervals). ``target`` defaults to the EMT tasks the run trained on. Without ``results`` a summary
    saved by an earlier call is kept. ``name`` (default: the Hub id pushed to, else the folder's name)
    is the card's title and its model-index name.
    """
    folder = Path(folder)
    run_file = folder / RUN_FILE
    if not run_file.is_file():
        raise EmtbenchError(f"{folder} has no {RUN_FILE}", where=str(folder),
                            fix="pass a folder written by an emtbench command (finetune, merge, tailor, build-base)")  # fmt: skip
    record = read_json(run_file, what="run record")
    if not isinstance(record, dict):
        raise EmtbenchError("not an emtbench run record", where=str(run_file))
    summary_file = folder / SUMMARY_FILE
    summary = None
    if results is not None:
        summary = forgetting_summary(results, base_results, target=target or training_datasets(record)[1])
        summary_file.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    elif summary_file.is_file():
        summary = ForgettingSummary.from_json(read_json(summary_file, what="card summary"))
    name = name or record.get("hub_id") or folder.resolve().name
    (folder / CARD_FILE).write_text(render_card(record, name=name, summary=summary))
    return folder / CARD_FILE


def check_card(text: str) -> None:
    """Validate a card's metadata with the Hub (``/api/validate-yaml``); an EmtbenchError says what is wrong."""
    from huggingface_hub import ModelCard

    try:
        ModelCard(text).validate(repo_type="model")
    except ValueError as error:
        raise EmtbenchError(f"the Hub rejects the model card's metadata: {error}", where=CARD_FILE,
                            fix="fix the YAML front matter of README.md (or regenerate it with `emtbench card DIR`)") from None  # fmt: skip


if __name__ == "__main__":  # pragma: no cover - a debugging aid
    print(render_card(read_json(Path(sys.argv[1]) / RUN_FILE)))
