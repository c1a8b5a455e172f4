"""Submitting to a Hub leaderboard: a run's results as a pull request, or a request to evaluate a model.

The Open LLM Leaderboard's way: scores live as files in a *results* dataset, and evaluation requests as
one JSON file per model in a *requests* dataset, with a ``status`` a backend moves from ``PENDING`` to
``RUNNING`` to ``FINISHED`` (or ``FAILED``). Outsiders, who cannot write to either, submit pull requests.

- :func:`submit_results` checks a run's files locally with the same readers the leaderboard uses
  (so a broken or mismatched file is refused before anything is uploaded), then opens a pull request
  adding them under ``MODEL/STAMP/`` in the results dataset.
- :func:`submit_request` files ``OWNER/NAME_eval_request_SHA.json`` for a Hub checkpoint (and its base)
  in the requests dataset; :mod:`emtbench.leaderboard.worker` evaluates it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import dumps_json, parse_yaml, read_json, read_text
from emtbench.core.records import RUN_FILE
from emtbench.core.secrets import has_secret
from emtbench.core.version import __version__
from emtbench.hub.calls import can_write, check_repo_id, hub_api, hub_errors, whoami
from emtbench.leaderboard.results import RunResults, read_results

DEFAULT_TASKS = ("emt_offline",)
"""What a request evaluates unless it says otherwise: the EMT tasks that need no dataset download."""
STATUSES = ("PENDING", "RUNNING", "FINISHED", "FAILED")
SUBMISSION_FILE = "submission.json"
_TASK_NAME = re.compile(r"^[A-Za-z0-9_\-.]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]+")


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def safe_name(name: str) -> str:
    """A model id or folder name as one path part of a repo (``org/model`` → ``org__model``)."""
    text = _UNSAFE.sub("-", name.strip().strip("/").replace("/", "__")).strip("-.")
    return text[:96] or "model"


# --- results -----------------------------------------------------------------------------------


@dataclass
class SubmittedResults:
    """The pull request that adds one run's files to a results dataset."""

    repo_id: str
    path_in_repo: str
    files: list[str]
    pr_url: str | None
    pr_num: int | None
    entry: dict[str, Any]
    """A manifest run entry pointing at the uploaded files (``hf://datasets/...``)."""
    notes: list[str] = field(default_factory=list)


def _model_args(data: dict[str, Any]) -> dict[str, str]:
    args = (data.get("config") or {}).get("model_args") if isinstance(data.get("config"), dict) else None
    if isinstance(args, dict):
        return {str(k): str(v) for k, v in args.items()}
    if isinstance(args, str):
        return dict(item.split("=", 1) for item in args.split(",") if "=" in item)
    return {}


def _model_name(data: dict[str, Any], results_file: Path) -> str:
    name = data.get("model_name") or _model_args(data).get("pretrained")
    if isinstance(name, str) and name:
        path = Path(name).expanduser()
        return path.name if path.is_absolute() or path.exists() else name
    return results_file.parent.name


def find_run_record(results_dir: Path, results_file: Path, data: dict[str, Any]) -> Path | None:
    """The ``emtbench_run.json`` of the model a results file evaluated: beside the results, or in the
    model folder its ``pretrained=`` names (emtbench writes one into every checkpoint it makes)."""
    folder = results_dir if results_dir.is_dir() else results_dir.parent
    for candidate in (results_file.parent / RUN_FILE, folder / RUN_FILE):
        if candidate.is_file():
            return candidate
    pretrained = _model_args(data).get("pretrained")
    if pretrained:
        candidate = Path(pretrained).expanduser() / RUN_FILE
        if candidate.is_file():
            return candidate
    return None


def check_run_files(results_dir: str | Path) -> tuple[RunResults, dict[str, Any]]:
    """Read a run's results and samples strictly; every sample file must agree with the results file."""
    from emtbench.leaderboard.build import _disagreement
    from emtbench.metrics import read_samples

    results = read_results(Path(results_dir), {})
    data = read_json(results.path, what="results file")
    for task, path in sorted(results.samples.items()):
        metric, _, filter_name = results.metric[task].partition(",")
        scores = read_samples(path, metric, filter_name or None)
        disagreement = _disagreement(task, scores, results)
        if disagreement:
            raise EmtbenchError(disagreement, where=str(path), fix="submit the samples of this run only")
    for path in [results.path, *results.samples.values()]:
        if has_secret(read_text(path)):
            raise EmtbenchError(
                "holds a credential in a URL (user:password@ or ?api_key=)",
                where=str(path),
                fix="re-run `emtbench eval` (it redacts them) or remove it by hand",
            )
    return results, data


def _check_run_record(path: Path) -> dict[str, Any]:
    record = read_json(path, what="run record", fix="pass the emtbench_run.json of the evaluated model")
    if not isinstance(record, dict) or not isinstance(record.get("method"), str):
        raise EmtbenchError(
            "not an emtbench run record (an object with a `method`)",
            where=str(path),
            fix="pass the emtbench_run.json of the evaluated model",
        )
    if has_secret(read_text(path)):
        raise EmtbenchError("holds a credential in a URL", where=str(path), fix="remove it before submitting")
    return record


def submit_results(
    results_dir: str | Path,
    to: str,
    *,
    name: str | None = None,
    run_record: str | Path | None = None,
    base: str | None = None,
) -> SubmittedResults:
    """Open a pull request adding a run's lm-eval results, samples and run record to dataset ``to``.

    Example::

        import emtbench
        pr = emtbench.submit_results("results/lora-mnist/", to="you/emt-results", base="llava-1.5-7b")
        print(pr.pr_url)

    ``results_dir`` is an ``--output_path`` of ``emtbench eval`` (or one ``results_*.json``); the
    samples files of the same run go with it. Everything is checked before anything is uploaded.
    """
    from huggingface_hub import CommitOperationAdd

    check_repo_id(to, flag="--to")
    results_dir = Path(results_dir)
    results, data = check_run_files(results_dir)
    notes: list[str] = []
    record_path = Path(run_record) if run_record else find_run_record(results_dir, results.path, data)
    record = _check_run_record(record_path) if record_path is not None else None
    if record is None:
        notes.append(f"no {RUN_FILE} found (a base model has none); pass --run-record for a fine-tuned one")
    model = name or _model_name(data, results.path)
    stamp = results.path.stem[len("results_") :] if results.path.stem.startswith("results_") else now_iso()
    folder = f"{safe_name(model)}/{safe_name(stamp)}"
    api = hub_api()
    user = whoami(api)
    files = {f"{folder}/{results.path.name}": results.path}
    files |= {f"{folder}/{path.name}": path for path in results.samples.values()}
    if record_path is not None:
        files[f"{folder}/{RUN_FILE}"] = record_path
    entry: dict[str, Any] = {"name": model, "results": f"hf://datasets/{to}/{folder}/"}
    if record is not None:
        entry["method"] = record["method"]
        entry["run_record"] = f"hf://datasets/{to}/{folder}/{RUN_FILE}"
    if base:
        entry["base"] = base
    submission = {
        "model": model,
        "submitter": user.get("name"),
        "submitted_time": now_iso(),
        "emtbench_version": __version__,
        "accuracy": {task: round(value, 4) for task, value in sorted(results.accuracy.items())},
        "manifest_entry": entry,
    }
    operations = [CommitOperationAdd(path, str(local)) for path, local in files.items()]
    operations.append(
        CommitOperationAdd(f"{folder}/{SUBMISSION_FILE}", (dumps_json(submission, indent=1) + "\n").encode())
    )
    with hub_errors("opening the pull request", to):
        commit = api.create_commit(
            to,
            operations,
            repo_type="dataset",
            create_pr=True,
            commit_message=f"Submit results of {model}",
            commit_description=(
                f"{len(results.accuracy)} task(s), submitted with emtbench {__version__}.\n\n"
                f"Manifest entry:\n```json\n{dumps_json(entry, indent=1)}\n```"
            ),
        )
    return SubmittedResults(
        to,
        folder,
        [*files, f"{folder}/{SUBMISSION_FILE}"],
        getattr(commit, "pr_url", None),
        getattr(commit, "pr_num", None),
        entry,
        notes,
    )


# --- evaluation requests -----------------------------------------------------------------------


@dataclass
class FiledRequest:
    """An evaluation request in a requests dataset (committed, or as a pull request)."""

    repo_id: str
    path_in_repo: str
    request: dict[str, Any]
    commit_url: str
    pr_url: str | None = None


def request_path(model: str, sha: str) -> str:
    owner, _, name = model.partition("/")
    return f"{safe_name(owner)}/{safe_name(name)}_eval_request_{sha[:12]}.json"


def recorded_base(model: str, sha: str) -> str | None:
    """The Hub id of the base a checkpoint records: ``base_model`` in its run record, else its card."""
    from emtbench.hub.download import RUN_RECORD

    api = hub_api()
    with hub_errors("reading the checkpoint's run record and card", model):
        files = api.list_repo_files(model, revision=sha)
        for name in (RUN_RECORD, "README.md"):
            if name not in files:
                continue
            local = api.hf_hub_download(model, name, revision=sha)
            if name == RUN_RECORD:
                record = read_json(local, what="run record")
                value = record.get("base_model") if isinstance(record, dict) else None
            else:
                text = read_text(local, what="model card")
                match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
                front = parse_yaml(match.group(1), f"{model}/README.md") if match else None
                value = front.get("base_model") if isinstance(front, dict) else None
                value = value[0] if isinstance(value, list) and len(value) == 1 else value
            if isinstance(value, str) and value.count("/") == 1 and not Path(value).exists():
                return value
    return None


def _check_tasks(tasks: list[str] | tuple[str, ...]) -> list[str]:
    tasks = [task.strip() for task in tasks if task.strip()]
    bad = [task for task in tasks if not _TASK_NAME.match(task)]
    if not tasks or bad:
        raise EmtbenchError(
            f"not task names: {bad or tasks}", where="--tasks", fix="e.g. --tasks emt_offline"
        )
    return tasks


def submit_request(
    model: str,
    to: str,
    *,
    base: str | None = None,
    revision: str | None = None,
    tasks: list[str] | tuple[str, ...] = DEFAULT_TASKS,
) -> FiledRequest:
    """File a request that a leaderboard's worker evaluate ``model`` (a Hub id) and its base.

    Example::

        import emtbench
        request = emtbench.submit_request("you/llava-lora-mnist", to="board/requests")
        print(request.path_in_repo, request.request["status"])

    The checkpoint is looked up first (it must exist, hold a ``config.json`` and safetensors weights),
    and pinned to the commit it is at now; ``base`` defaults to the base it records. A request is
    committed when the token may write to ``to``, else opened as a pull request.
    """
    from huggingface_hub import CommitOperationAdd

    from emtbench.hub.download import check_model_repo, resolve_revision

    check_repo_id(model, flag="--model")
    check_repo_id(to, flag="--to")
    if base is not None:
        check_repo_id(base, flag="--base")
    tasks = _check_tasks(tasks)
    api = hub_api()
    user = whoami(api)
    sha = resolve_revision(model, revision)
    check_model_repo(model, sha)
    base = base or recorded_base(model, sha)
    base_sha = None
    if base is not None:
        base_sha = resolve_revision(base)
        check_model_repo(base, base_sha)
    path = request_path(model, sha)
    with hub_errors("reading the requests dataset", to):
        existing = api.list_repo_files(to, repo_type="dataset")
    if path in existing:
        with hub_errors("reading the existing request", to):
            old = read_json(api.hf_hub_download(to, path, repo_type="dataset"), what="request")
        status = old.get("status") if isinstance(old, dict) else None
        raise EmtbenchError(
            f"{model} at {sha[:12]} was requested already (status {status})",
            where=f"{to}/{path}",
            fix="push a new commit to evaluate a new version",
        )
    request = {
        "model": model,
        "revision": revision or "main",
        "sha": sha,
        "base": base,
        "base_sha": base_sha,
        "tasks": tasks,
        "status": "PENDING",
        "submitted_time": now_iso(),
        "submitter": user.get("name"),
        "emtbench_version": __version__,
    }
    direct = can_write(user, to)
    with hub_errors("filing the request", to):
        commit = api.create_commit(
            to,
            [CommitOperationAdd(path, (dumps_json(request, indent=1) + "\n").encode())],
            repo_type="dataset",
            create_pr=not direct,
            commit_message=f"Request evaluation of {model}",
        )
    return FiledRequest(to, path, request, str(commit.commit_url), getattr(commit, "pr_url", None))
