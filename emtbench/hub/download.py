"""Files from the Hub for a leaderboard or an evaluation: ``hf://`` paths, downloaded through the cache.

A manifest entry may name a Hub file or folder instead of a local path:

- ``hf://datasets/USER/RESULTS/llava-lora/2026-01-01/`` — a folder of a dataset repo;
- ``hf://datasets/USER/RESULTS@REVISION/path/results_x.json`` — one file, at a revision;
- ``hf://USER/MODEL/emtbench_run.json`` (or ``hf://models/USER/MODEL/...``) — a file of a model repo;
  ``hf://USER/MODEL`` alone is that repo's run record, ``emtbench_run.json``.

Downloads go through huggingface_hub (``hf_hub_download`` / ``snapshot_download``), so they are cached
and shared with every other tool, and come back as local paths that the same strict readers read as any
local input. Only data files are fetched from a folder (:data:`DATA_PATTERNS`) and only weights, configs
and tokenizer files from a model (:data:`MODEL_PATTERNS`): never code, never pickles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from emtbench.core.errors import EmtbenchError
from emtbench.hub.calls import hub_api, hub_errors

SCHEME = "hf://"
DATA_PATTERNS = ("*.json", "*.jsonl", "*.yaml", "*.yml", "*.csv", "*.md")
"""What a folder download fetches: results, samples, run records, manifests; nothing executable."""
MODEL_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.json",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "*.jinja",
    "README.md",
)
"""What a checkpoint download fetches: no ``*.py`` (remote code), no ``*.bin``/``*.pt``/``*.pkl`` pickles."""
RUN_RECORD = "emtbench_run.json"
_TYPE_PREFIX = {"datasets": "dataset", "spaces": "space", "models": "model"}
_REVISION = re.compile(r"^[A-Za-z0-9._\-/]+$")


@dataclass(frozen=True)
class HubPath:
    """A parsed ``hf://`` path: which repo, at which revision, and the path inside it ("" for the root)."""

    repo_type: str
    repo_id: str
    revision: str | None
    path: str

    def __str__(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        revision = f"@{self.revision}" if self.revision else ""
        return f"{SCHEME}{prefix}{self.repo_id}{revision}" + (f"/{self.path}" if self.path else "")

    @property
    def url(self) -> str:
        """The repo's page on the Hub."""
        from huggingface_hub import constants

        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return f"{constants.ENDPOINT}/{prefix}{self.repo_id}"


def is_hub_path(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def parse_hub_path(value: str) -> HubPath:
    """``hf://[datasets/|spaces/|models/]OWNER/NAME[@REVISION][/PATH]`` → :class:`HubPath`."""
    fix = "write hf://datasets/USER/NAME/path, hf://USER/MODEL/path, optionally NAME@REVISION"
    if not is_hub_path(value):
        raise EmtbenchError(f"{value!r} is not an hf:// path", fix=fix)
    parts = [part for part in value[len(SCHEME) :].split("/")]
    repo_type = "model"
    if parts and parts[0] in _TYPE_PREFIX:
        repo_type = _TYPE_PREFIX[parts.pop(0)]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise EmtbenchError(f"{value!r} names no OWNER/NAME repo", fix=fix)
    owner, name, rest = parts[0], parts[1], parts[2:]
    revision = None
    if "@" in name:
        name, revision = name.split("@", 1)
        if not revision or not _REVISION.match(revision):
            raise EmtbenchError(f"{value!r}: revision {revision!r} is not a branch, tag or commit", fix=fix)
    if any(part in ("..", ".") for part in rest) or any("\\" in part for part in rest):
        raise EmtbenchError(f"{value!r}: the path inside the repo may not hold . or .. parts", fix=fix)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(f"{owner}/{name}")
    except HFValidationError as error:
        raise EmtbenchError(f"{value!r}: {str(error).splitlines()[0]}", fix=fix) from None
    return HubPath(repo_type, f"{owner}/{name}", revision, "/".join(part for part in rest if part))


def download(value: str | HubPath, *, patterns: tuple[str, ...] = DATA_PATTERNS) -> Path:
    """The local (cached) copy of an ``hf://`` file or folder; a named error if the Hub has neither.

    A bare model repo (``hf://USER/MODEL``) means its run record. A folder comes back with only the
    files matching ``patterns`` in it.
    """
    target = parse_hub_path(value) if isinstance(value, str) else value
    if target.repo_type == "model" and not target.path:
        target = HubPath(target.repo_type, target.repo_id, target.revision, RUN_RECORD)
    api = hub_api()
    with hub_errors(f"reading {target}", target.repo_id):
        files = api.list_repo_files(target.repo_id, repo_type=target.repo_type, revision=target.revision)
        if target.path in files:
            return Path(
                api.hf_hub_download(
                    target.repo_id,
                    target.path,
                    repo_type=target.repo_type,
                    revision=target.revision,
                )
            )
        prefix = f"{target.path}/" if target.path else ""
        inside = [name for name in files if name.startswith(prefix)]
        if not inside:
            raise EmtbenchError(
                f"{target}: the repo holds no file or folder {target.path!r}",
                where=target.repo_id,
                fix=f"see the files at {target.url}",
            )
        folder = api.snapshot_download(
            target.repo_id,
            repo_type=target.repo_type,
            revision=target.revision,
            allow_patterns=[prefix + pattern for pattern in patterns]
            + [prefix + "**/" + pattern for pattern in patterns],
        )
    return Path(folder) / target.path if target.path else Path(folder)


def check_model_repo(repo_id: str, revision: str | None = None) -> list[str]:
    """The files of a Hub checkpoint; a named error unless it holds a config.json and safetensors weights."""
    api = hub_api()
    with hub_errors("looking at the checkpoint", repo_id):
        files = api.list_repo_files(repo_id, revision=revision)
    if "config.json" not in files:
        raise EmtbenchError(
            "the repo holds no config.json: not a transformers checkpoint",
            where=repo_id,
            fix="push a folder written by save_pretrained",
        )
    if not any(name.endswith(".safetensors") for name in files):
        raise EmtbenchError(
            "the repo holds no *.safetensors weights (pickled *.bin weights are never loaded)",
            where=repo_id,
            fix="re-save the model with save_pretrained(safe_serialization=True) and push it again",
        )
    return files


def download_model(repo_id: str, revision: str | None = None) -> Path:
    """A checkpoint's weights, configs and tokenizer files (no code, no pickles), through the cache."""
    check_model_repo(repo_id, revision)
    api = hub_api()
    with hub_errors("downloading the checkpoint", repo_id):
        return Path(api.snapshot_download(repo_id, revision=revision, allow_patterns=list(MODEL_PATTERNS)))


def resolve_revision(repo_id: str, revision: str | None = None, *, repo_type: str = "model") -> str:
    """The commit a branch, tag or ``None`` (main) points at now, so a run can say exactly what it read."""
    api = hub_api()
    with hub_errors("looking up the repo", repo_id):
        info = api.repo_info(repo_id, repo_type=repo_type, revision=revision)
    sha = getattr(info, "sha", None)
    if not sha:
        raise EmtbenchError("the Hub did not say which commit the repo is at", where=repo_id)
    return str(sha)
