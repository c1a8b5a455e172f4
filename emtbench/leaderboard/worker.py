"""``emtbench leaderboard worker``: the backend of a Hub leaderboard, as the Open LLM Leaderboard runs one.

It reads the request files of a *requests* dataset (:mod:`emtbench.leaderboard.submissions`), and for
each ``PENDING`` one:

1. marks it ``RUNNING`` (a commit to the requests dataset, so other workers and the submitter see it);
2. downloads the checkpoint at the requested commit, and its base, through the Hub cache — weights,
   configs and tokenizer files only (:data:`~emtbench.hub.download.MODEL_PATTERNS`): no ``*.py`` and
   no pickles are fetched, and nothing is loaded with ``trust_remote_code``;
3. validates each like any local input (a strict ``config.json``; weights that fit the config and are
   finite, via :func:`emtbench.models.checked.from_pretrained_checked`);
4. runs the EMT suite on both (:func:`emtbench.evaluate`, default the offline tasks), the base only if
   the results dataset does not hold its results at that commit already;
5. uploads results, samples and the run record under ``MODEL/SHA/`` in the *results* dataset, adds the
   run (with its base) to the results dataset's ``leaderboard.yaml`` (entries are ``hf://`` paths, so
   ``emtbench leaderboard build hf://datasets/USER/RESULTS/leaderboard.yaml`` builds the page), and
6. marks the request ``FINISHED`` with where the results are, or ``FAILED`` with the error.

Requests opened as pull requests are picked up once a maintainer merges them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import dumps_json, parse_yaml, read_json, read_text
from emtbench.core.records import RUN_FILE
from emtbench.core.secrets import redact_text
from emtbench.core.version import __version__
from emtbench.hub.calls import can_write, check_repo_id, hub_api, hub_errors, whoami
from emtbench.leaderboard.submissions import now_iso, safe_name

MANIFEST_FILE = "leaderboard.yaml"


@dataclass
class WorkerOptions:
    """How the worker evaluates; ``limit``/``device``/``batch_size`` are lm-eval's options."""

    requests: str
    results: str
    limit: float | None = None
    device: str | None = None
    batch_size: int | str = 1
    once: bool = False
    interval: float = 60.0
    work_dir: Path | None = None
    """Where lm-eval writes before the upload (a temporary folder by default, removed after each request)."""


@dataclass
class Processed:
    """What the worker did with one request."""

    path: str
    model: str
    status: str
    results_path: str | None = None
    error: str | None = None
    accuracy: dict[str, float] = field(default_factory=dict)


def _commit_json(api, repo_id: str, path: str, value: dict[str, Any], message: str) -> None:
    from huggingface_hub import CommitOperationAdd

    with hub_errors(f"updating {path}", repo_id):
        api.create_commit(
            repo_id,
            [CommitOperationAdd(path, (dumps_json(value, indent=1) + "\n").encode())],
            repo_type="dataset",
            commit_message=message,
        )


def pending_requests(requests: str) -> list[tuple[str, dict[str, Any]]]:
    """``(path, request)`` of every ``PENDING`` request on the requests dataset's main branch, oldest first.

    A request file that cannot be read or is not a request is skipped with a line on stderr: one
    bad file must not stop the queue.
    """
    api = hub_api()
    with hub_errors("listing the requests", requests):
        files = [
            name for name in api.list_repo_files(requests, repo_type="dataset") if name.endswith(".json")
        ]
    found = []
    for name in files:
        try:
            with hub_errors(f"reading {name}", requests):
                local = api.hf_hub_download(requests, name, repo_type="dataset")
            request = read_json(local, what="request")
            if not isinstance(request, dict) or not isinstance(request.get("model"), str):
                raise EmtbenchError("not a request (an object with a `model`)", where=name)
        except EmtbenchError as error:
            print(f"emtbench worker: skipping {name}: {error}", file=sys.stderr)
            continue
        if request.get("status") == "PENDING":
            found.append((name, request))
    found.sort(key=lambda item: str(item[1].get("submitted_time", "")))
    return found


def _has_chat_template(folder: Path) -> bool:
    if any((folder / name).is_file() for name in ("chat_template.jinja", "chat_template.json")):
        return True
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            data = read_json(path, what=name)
            if isinstance(data, dict) and data.get("chat_template"):
                return True
    return False


def fetch_checked(model: str, sha: str) -> Path:
    """The checkpoint at ``sha``, downloaded (no code, no pickles) and validated like a local folder."""
    import gc

    from emtbench.hub.download import download_model
    from emtbench.methods.fusion.checkpoints import load_model
    from emtbench.models.checked import check_config_file

    folder = download_model(model, sha)
    config = check_config_file(str(folder), where=model)
    if config and config.get("auto_map"):
        print(
            f"emtbench worker: {model} ships remote code (auto_map); it is not run — the model must "
            "load with the classes installed here",
            file=sys.stderr,
        )
    model_object = load_model(str(folder), flag=model)  # missing / mis-shaped / NaN weights: named errors
    del model_object
    gc.collect()
    return folder


def evaluate_checkpoint(folder: Path, tasks: list[str], out: Path, options: WorkerOptions):
    """Run the tasks on a downloaded checkpoint; lm-eval writes results and samples under ``out``."""
    from emtbench.tasks.evaluation import evaluate

    return evaluate(
        tasks=tasks,
        model="hf-multimodal",
        model_args={"pretrained": str(folder), "trust_remote_code": False},
        apply_chat_template=_has_chat_template(folder),
        output_path=out,
        log_samples=True,
        limit=options.limit,
        device=options.device,
        batch_size=options.batch_size,
    )


def _upload_run(api, options: WorkerOptions, folder: str, result, extra: dict[str, Path]) -> list[str]:
    from huggingface_hub import CommitOperationAdd

    files = {f"{folder}/{result.results_file.name}": result.results_file}
    files |= {f"{folder}/{path.name}": path for path in result.samples_files.values()}
    files |= {f"{folder}/{name}": path for name, path in extra.items()}
    with hub_errors("uploading the results", options.results):
        api.create_commit(
            options.results,
            [CommitOperationAdd(path, str(local)) for path, local in files.items()],
            repo_type="dataset",
            commit_message=f"Results of {folder}",
        )
    return list(files)


def _read_manifest(api, results: str) -> dict[str, Any]:
    with hub_errors("reading the results dataset", results):
        files = api.list_repo_files(results, repo_type="dataset")
        if MANIFEST_FILE not in files:
            return {"title": f"EMT forgetting: {results}", "runs": []}
        local = api.hf_hub_download(results, MANIFEST_FILE, repo_type="dataset")
    manifest = parse_yaml(read_text(local, what="manifest"), f"{results}/{MANIFEST_FILE}")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list):
        raise EmtbenchError("the results dataset's manifest has no `runs:` list", where=results)
    return manifest


def _add_runs(api, results: str, entries: list[dict[str, Any]]) -> None:
    import yaml

    manifest = _read_manifest(api, results)
    names = {entry["name"] for entry in entries}
    manifest["runs"] = [run for run in manifest["runs"] if run.get("name") not in names] + entries
    from huggingface_hub import CommitOperationAdd

    text = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)
    with hub_errors("updating the manifest", results):
        api.create_commit(
            results,
            [CommitOperationAdd(MANIFEST_FILE, text.encode())],
            repo_type="dataset",
            commit_message=f"Add {', '.join(sorted(names))} to the leaderboard",
        )


def process_request(path: str, request: dict[str, Any], options: WorkerOptions) -> Processed:
    """Evaluate one request and record the outcome in it (``FINISHED`` or ``FAILED``)."""
    api = hub_api()
    model = request["model"]
    running = request | {"status": "RUNNING", "started_time": now_iso(), "worker_emtbench": __version__}
    _commit_json(api, options.requests, path, running, f"Evaluating {model}")
    work = Path(tempfile.mkdtemp(prefix="emtbench-worker-", dir=options.work_dir))
    try:
        processed = _evaluate_request(api, request, options, work)
        final = running | {
            "status": "FINISHED",
            "finished_time": now_iso(),
            "results": processed.results_path,
            "accuracy": processed.accuracy,
        }
    except Exception as error:  # any failure is the request's outcome, not the end of the worker
        message = str(error) if isinstance(error, EmtbenchError) else f"{type(error).__name__}: {error}"
        message = redact_text(message)[:2000]
        processed = Processed(path, model, "FAILED", error=message)
        final = running | {"status": "FAILED", "finished_time": now_iso(), "error": message}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    processed.path = path
    _commit_json(api, options.requests, path, final, f"{final['status']}: {model}")
    return processed


def _evaluate_request(api, request: dict[str, Any], options: WorkerOptions, work: Path) -> Processed:
    model, sha = request["model"], request.get("sha")
    check_repo_id(model, flag="model")
    tasks = request.get("tasks")
    if not isinstance(sha, str) or not sha:
        raise EmtbenchError(
            "the request names no commit (`sha`)", fix="file it with `emtbench submit --model`"
        )
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise EmtbenchError("the request's `tasks` is not a list of task names")
    base, base_sha = request.get("base"), request.get("base_sha")
    entries: list[dict[str, Any]] = []
    base_name = None
    if base is not None:
        check_repo_id(base, flag="base")
        base_name = f"{base}@{str(base_sha)[:12]}"
        base_folder = f"{safe_name(base)}/{str(base_sha)[:12]}"
        with hub_errors("reading the results dataset", options.results):
            existing = api.list_repo_files(options.results, repo_type="dataset")
        if not any(name.startswith(f"{base_folder}/results_") for name in existing):
            base_dir = fetch_checked(base, base_sha)
            base_result = evaluate_checkpoint(base_dir, tasks, work / "base", options)
            _upload_run(api, options, base_folder, base_result, {})
        entries.append(
            {
                "name": base_name,
                "results": f"hf://datasets/{options.results}/{base_folder}/",
                "method": "zero-shot",
                "url": f"{_endpoint()}/{base}",
            }
        )
    model_dir = fetch_checked(model, sha)
    result = evaluate_checkpoint(model_dir, tasks, work / "model", options)
    folder = f"{safe_name(model)}/{sha[:12]}"
    extra = {RUN_FILE: model_dir / RUN_FILE} if (model_dir / RUN_FILE).is_file() else {}
    _upload_run(api, options, folder, result, extra)
    entry: dict[str, Any] = {
        "name": f"{model}@{sha[:12]}",
        "results": f"hf://datasets/{options.results}/{folder}/",
        "url": f"{_endpoint()}/{model}",
    }
    if extra:
        record = read_json(model_dir / RUN_FILE, what="run record")
        if isinstance(record, dict) and isinstance(record.get("method"), str):
            entry["method"] = record["method"]
        entry["run_record"] = f"hf://datasets/{options.results}/{folder}/{RUN_FILE}"
    if base_name is not None:
        entry["base"] = base_name
        entry.setdefault("method", "fine-tuned")
    entries.append(entry)
    _add_runs(api, options.results, entries)
    accuracy = {
        task: float(values["acc,none"])
        for task, values in result.results.get("results", {}).items()
        if isinstance(values, dict) and isinstance(values.get("acc,none"), int | float)
    }
    return Processed("", model, "FINISHED", results_path=f"{options.results}/{folder}", accuracy=accuracy)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def run_worker(options: WorkerOptions | None = None, /, **values: Any) -> list[Processed]:
    """Take the pending requests of ``options.requests`` and evaluate them into ``options.results``.

    Example::

        import emtbench
        done = emtbench.run_worker(requests="board/requests", results="board/results", once=True)
        print([(p.model, p.status) for p in done])

    With ``once`` it handles what is pending and returns; otherwise it polls every ``interval``
    seconds until interrupted. The token must be able to write to both datasets (checked first).
    """
    if options is None:
        options = WorkerOptions(**values)
    check_repo_id(options.requests, flag="--requests")
    check_repo_id(options.results, flag="--results")
    api = hub_api()
    user = whoami(api)
    for repo in (options.requests, options.results):
        if not can_write(user, repo):
            raise EmtbenchError(
                f"the token's account ({user.get('name')}) cannot write to {repo}",
                where="HF_TOKEN",
                fix="run the worker with a token of the leaderboard's owner",
            )
        with hub_errors("looking up the dataset", repo):
            api.repo_info(repo, repo_type="dataset")
    done: list[Processed] = []
    while True:
        for path, request in pending_requests(options.requests):
            print(f"emtbench worker: evaluating {request['model']} ({path})", file=sys.stderr, flush=True)
            processed = process_request(path, request, options)
            print(f"emtbench worker: {processed.status} {processed.model}", file=sys.stderr, flush=True)
            done.append(processed)
        if options.once:
            return done
        time.sleep(options.interval)
