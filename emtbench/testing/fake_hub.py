"""A small Hugging Face Hub on 127.0.0.1 that the real ``huggingface_hub`` client talks to over HTTP.

Tests (and demo scripts) start a :class:`FakeHub`, point ``huggingface_hub`` at it with
:func:`use_fake_hub` (``HF_ENDPOINT``, ``HF_TOKEN`` and the constants the library reads at import), and
then every Hub path of emtbench runs unchanged: create repo, preupload, ndjson commit, pull requests,
``/api/validate-yaml``, ``resolve`` downloads, repo info and tree listing for ``snapshot_download``.

What it implements (the endpoints huggingface_hub 1.x/2.x calls):

- ``GET /api/whoami-v2``: 401 for a missing or unknown token.
- ``POST /api/repos/create`` (model / dataset / space; 409 if it exists), ``POST /api/repos/delete``.
- ``GET /api/{type}s/{repo}[/revision/{rev}]`` (repo info with ``sha`` and ``siblings``),
  ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]``, ``GET .../refs``, ``GET .../commits/{rev}``,
  ``POST .../paths-info/{rev}``.
- ``POST /api/{type}s/{repo}/preupload/{rev}`` and ``POST .../commit/{rev}`` (ndjson; ``?create_pr=1``
  opens a pull request whose head is ``refs/pr/N``; ``parentCommit`` is checked, 412 if stale).
- ``GET/POST /api/{type}s/{repo}/discussions``, ``GET .../discussions/{n}``,
  ``POST /api/{type}s/{repo}/discussions/{n}/{merge,status,comment}``.
- ``POST /api/validate-yaml``: a subset of the Hub's checks of card metadata (see :func:`validate_card`).
- ``GET/HEAD /{prefix}{repo}/resolve/{rev}/{path}`` with ``ETag``, ``X-Repo-Commit``,
  ``Content-Length``; errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``) like the Hub's, so the client raises its named errors.
- ``GET /spaces/{owner}/{name}`` serves a static Space's ``index.html`` (``sdk: static``).

Run it in the foreground, to try the Hub loop offline from a shell (``bash scripts/hub_loop.sh`` does)::

    python -m emtbench.testing.fake_hub [--port N] [--root DIR]

It prints ``export HF_ENDPOINT=...``, ``export HF_TOKEN=...`` (user ``emt-user``) and
``export OTHER_HF_TOKEN=...`` (user ``emt-outsider``, "another person") and serves until Ctrl-C or
SIGTERM. Repos live in memory (gone when it stops); ``--root`` keeps the blobs.

Not implemented: git LFS and Xet. Preupload answers ``"regular"`` for every file, so files of any size
travel inline (base64) in the commit; the real Hub would ask for LFS above 10 MB (and for
``*.safetensors``). Keep test files small. Permissions: a user writes to their own namespace and
their orgs; anyone with a valid token may open a pull request (``create_pr``) on a public repo, as on
the Hub. Private repos answer 404 to others.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_USER = "emt-user"
DEFAULT_TOKEN = "hf_fakehubtokenemtuser0000000000000"
OTHER_USER = "emt-outsider"
OTHER_TOKEN = "hf_fakehubtokenoutsider000000000000"
REPO_TYPES = ("model", "dataset", "space")
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
INITIAL_GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)

# A subset of the Hub's license identifiers (https://huggingface.co/docs/hub/repositories-licenses).
KNOWN_LICENSES = frozenset(
    [
        "apache-2.0",
        "mit",
        "openrail",
        "openrail++",
        "bigscience-openrail-m",
        "creativeml-openrail-m",
        "bigscience-bloom-rail-1.0",
        "bigcode-openrail-m",
        "afl-3.0",
        "artistic-2.0",
        "bsl-1.0",
        "bsd",
        "bsd-2-clause",
        "bsd-3-clause",
        "bsd-3-clause-clear",
        "c-uda",
        "cc",
        "cc0-1.0",
        "cc-by-2.0",
        "cc-by-2.5",
        "cc-by-3.0",
        "cc-by-4.0",
        "cc-by-sa-3.0",
        "cc-by-sa-4.0",
        "cc-by-nc-2.0",
        "cc-by-nc-3.0",
        "cc-by-nc-4.0",
        "cc-by-nd-4.0",
        "cc-by-nc-nd-3.0",
        "cc-by-nc-nd-4.0",
        "cc-by-nc-sa-2.0",
        "cc-by-nc-sa-3.0",
        "cc-by-nc-sa-4.0",
        "cdla-sharing-1.0",
        "cdla-permissive-1.0",
        "cdla-permissive-2.0",
        "wtfpl",
        "ecl-2.0",
        "epl-1.0",
        "epl-2.0",
        "etalab-2.0",
        "eupl-1.1",
        "eupl-1.2",
        "agpl-3.0",
        "gfdl",
        "gpl",
        "gpl-2.0",
        "gpl-3.0",
        "lgpl",
        "lgpl-2.1",
        "lgpl-3.0",
        "isc",
        "h-research",
        "intel-research",
        "lppl-1.3c",
        "ms-pl",
        "apple-ascl",
        "apple-amlr",
        "mpl-2.0",
        "odc-by",
        "odbl",
        "openmdw-1.0",
        "openrail-m",
        "osl-3.0",
        "postgresql",
        "ofl-1.1",
        "ncsa",
        "unlicense",
        "zlib",
        "pddl",
        "lgpl-lr",
        "deepfloyd-if-license",
        "fair-noncommercial-research-license",
        "llama2",
        "llama3",
        "llama3.1",
        "llama3.2",
        "llama3.3",
        "llama4",
        "grok2-community",
        "gemma",
        "unknown",
        "other",
    ]
)
KNOWN_PIPELINE_TAGS = frozenset(
    [
        "image-text-to-text",
        "text-generation",
        "text2text-generation",
        "image-to-text",
        "visual-question-answering",
        "image-classification",
        "zero-shot-image-classification",
        "feature-extraction",
        "fill-mask",
        "text-classification",
        "any-to-any",
        "image-feature-extraction",
        "sentence-similarity",
    ]
)


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's ``oid`` and ``ETag``)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Commit:
    oid: str
    title: str
    message: str
    author: str
    date: str
    parent: str | None
    files: dict[str, str]
    """path -> blob oid: the full tree at this commit."""


@dataclass
class Discussion:
    num: int
    title: str
    author: str
    is_pull_request: bool
    created_at: str
    description: str = ""
    status: str = "open"
    base: str = "main"
    merge_commit: str | None = None
    comments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None = None
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    """branch or ``refs/pr/N`` -> commit oid."""
    discussions: list[Discussion] = field(default_factory=list)
    created_at: str = field(default_factory=_now)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        if revision in self.commits:
            return self.commits[revision]
        return None


class HubError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


def _front_matter(content: str) -> tuple[dict[str, Any] | None, str | None]:
    """(metadata, error) of a card's YAML block; (None, None) without one."""
    import yaml

    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if not match:
        return None, None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        return None, f"Invalid YAML in the metadata block: {exc}"
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return None, "The metadata block must be a YAML mapping"
    return data, None


def validate_card(content: str, repo_type: str = "model") -> list[str]:
    """The problems the fake Hub finds in a card's metadata (empty when valid).

    A subset of the Hub's own checks: types of the common keys, known ``license`` / ``pipeline_tag``
    values, a space's ``sdk``, and the ``model-index`` shape (name; results with ``task.type``,
    ``dataset.type`` / ``dataset.name``, ``metrics`` with ``type`` and ``value``).
    """
    data, error = _front_matter(content)
    if error:
        return [error]
    if data is None:
        return [] if repo_type != "space" else ['"sdk" is required for a Space']
    problems: list[str] = []

    def str_or_list(key: str) -> None:
        value = data.get(key)
        if value is None:
            return
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) and item for item in items):
            problems.append(f'"{key}" must be a string or a list of strings')

    for key in ("tags", "datasets", "base_model", "language", "metrics"):
        str_or_list(key)
    for key in ("library_name", "pipeline_tag", "license_name", "license_link", "sdk", "title"):
        if key in data and not isinstance(data[key], str):
            problems.append(f'"{key}" must be a string')
    licenses = data.get("license")
    if licenses is not None:
        for value in licenses if isinstance(licenses, list) else [licenses]:
            if value not in KNOWN_LICENSES:
                problems.append(f'"license" must be one of the Hub\'s license identifiers, got {value!r}')
        if licenses == "other" and not data.get("license_name"):
            problems.append('"license_name" is required when "license" is "other"')
    tag = data.get("pipeline_tag")
    if repo_type == "model" and isinstance(tag, str) and tag not in KNOWN_PIPELINE_TAGS:
        problems.append(f'"pipeline_tag" is not a known task: {data["pipeline_tag"]!r}')
    if repo_type == "space" and data.get("sdk") not in SPACE_SDKS:
        problems.append(f'"sdk" must be one of {", ".join(SPACE_SDKS)}')
    if "model-index" in data:
        problems += _model_index_problems(data["model-index"])
    return problems


def _model_index_problems(index: Any) -> list[str]:
    if not isinstance(index, list) or not index:
        return ['"model-index" must be a non-empty list']
    problems = []
    for i, entry in enumerate(index):
        where = f'"model-index[{i}]'
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            problems.append(f'{where}.name" is required')
            continue
        results = entry.get("results")
        if not isinstance(results, list) or not results:
            problems.append(f'{where}.results" must be a non-empty list')
            continue
        for j, result in enumerate(results):
            at = f"{where}.results[{j}]"
            if not isinstance(result, dict):
                problems.append(f'{at}" must be a mapping')
                continue
            task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                problems.append(f'{at}.task.type" is required')
            if not isinstance(dataset, dict) or not all(
                isinstance(dataset.get(k), str) for k in ("type", "name")
            ):
                problems.append(f'{at}.dataset.type" and "dataset.name" are required')
            if not isinstance(metrics, list) or not metrics:
                problems.append(f'{at}.metrics" must be a non-empty list')
                continue
            for k, metric in enumerate(metrics):
                if (
                    not isinstance(metric, dict)
                    or not isinstance(metric.get("type"), str)
                    or "value" not in metric
                ):
                    problems.append(f'{at}.metrics[{k}]" needs "type" and "value"')
                elif not isinstance(metric["value"], (int, float, str)) or isinstance(metric["value"], bool):
                    problems.append(f'{at}.metrics[{k}].value" must be a number or a string')
    return problems


class FakeHub:
    """A Hub server on 127.0.0.1 (a thread); use as a context manager.

    ``users`` maps token -> user name (default: :data:`DEFAULT_TOKEN` -> ``emt-user`` and
    :data:`OTHER_TOKEN` -> ``emt-outsider``); ``orgs`` maps an organization to its member names.
    Blobs are stored under ``root`` (a temporary folder unless given). :attr:`requests` records
    ``(method, path)`` of every request, for tests that check what travelled.
    """

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        orgs: dict[str, list[str]] | None = None,
        root: str | Path | None = None,
    ) -> None:
        self.users = (
            dict(users) if users is not None else {DEFAULT_TOKEN: DEFAULT_USER, OTHER_TOKEN: OTHER_USER}
        )
        self.orgs = {name: list(members) for name, members in (orgs or {}).items()}
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="emtbench-fake-hub-"))
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def token(self) -> str:
        """A valid token (of the first user)."""
        return next(iter(self.users))

    @property
    def user(self) -> str:
        return self.users[self.token]

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> FakeHub:
        """Serve on 127.0.0.1:``port`` (0: a free port) in a daemon thread."""
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._own_root:
            import shutil

            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ inspection helpers

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The stored repo (KeyError if absent)."""
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """path -> content at ``revision`` (a branch, ``refs/pr/N`` or a commit oid)."""
        with self.lock:
            commit = self.repo(repo_id, repo_type).resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return {path: self._read_blob(oid) for path, oid in commit.files.items()}

    def read(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> bytes:
        return self.files(repo_id, repo_type, revision)[path]

    def pull_requests(self, repo_id: str, repo_type: str = "model") -> list[Discussion]:
        return [d for d in self.repo(repo_id, repo_type).discussions if d.is_pull_request]

    def all_stored_bytes(self) -> bytes:
        """Every blob the hub holds, concatenated (to check that no token was uploaded)."""
        return b"".join(path.read_bytes() for path in sorted((self.root / "blobs").iterdir()))

    # ------------------------------------------------------------------ store

    def _write_blob(self, content: bytes) -> str:
        oid = git_blob_oid(content)
        path = self.root / "blobs" / oid
        if not path.exists():
            path.write_bytes(content)
        return oid

    def _read_blob(self, oid: str) -> bytes:
        return (self.root / "blobs" / oid).read_bytes()

    def _commit(
        self, repo: Repo, parent: Commit | None, files: dict[str, str], title: str, message: str, author: str
    ) -> Commit:
        seed = f"{repo.repo_id}{parent.oid if parent else ''}{title}{sorted(files.items())}{uuid.uuid4()}"
        oid = hashlib.sha1(seed.encode()).hexdigest()
        commit = Commit(oid, title, message, author, _now(), parent.oid if parent else None, files)
        repo.commits[oid] = commit
        return commit

    def create_repo(
        self,
        repo_id: str,
        repo_type: str = "model",
        *,
        private: bool = False,
        sdk: str | None = None,
        author: str | None = None,
    ) -> Repo:
        """Create a repo directly (for test set-up), with the Hub's initial ``.gitattributes`` commit."""
        with self.lock:
            repo = Repo(repo_type, repo_id, private, sdk)
            files = {".gitattributes": self._write_blob(INITIAL_GITATTRIBUTES)}
            commit = self._commit(repo, None, files, "initial commit", "", author or repo.owner)
            repo.refs["main"] = commit.oid
            self.repos[(repo_type, repo_id)] = repo
            return repo


# ---------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"
    server_version = "emtbench-fake-hub/1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- plumbing

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._json(error.status, {"error": error.message, **error.extra}, headers)

    def _user(self, required: bool = False) -> str | None:
        """The caller's user name; 401 for an unknown token, or for none when ``required``."""
        auth = self.headers.get("Authorization", "")
        if not auth:
            if required:
                raise HubError(
                    401,
                    "You must be authenticated to access this resource. Set HF_TOKEN or run `hf auth login`.",
                )
            return None
        token = auth.removeprefix("Bearer ").strip()
        user = self.fake_hub.users.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or user in self.fake_hub.orgs.get(namespace, []))

    def _get_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.fake_hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._can_write(user, repo.owner)):
            raise HubError(404, f"Repository Not Found for url: {self.path}.", "RepoNotFound")
        return repo

    def _commit_of(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _query(self) -> dict[str, str]:
        return {key: values[-1] for key, values in parse_qs(urlsplit(self.path).query).items()}

    def _segments(self) -> list[str]:
        return [unquote(part) for part in urlsplit(self.path).path.split("/") if part != ""]

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        hub = self.fake_hub
        body = self._body() if self.command in ("POST", "PUT", "DELETE") else b""
        hub.requests.append((self.command, urlsplit(self.path).path))
        try:
            with hub.lock:
                self._route(self._segments(), body)
        except HubError as error:
            self._error(error)
        except Exception as exc:  # a bug in the fake: say so instead of hanging the client
            self._json(500, {"error": f"fake hub: {type(exc).__name__}: {exc}"})

    # -- routing

    def _route(self, seg: list[str], body: bytes) -> None:
        method = self.command
        if seg[:1] == ["api"]:
            rest = seg[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if rest == ["validate-yaml"] and method == "POST":
                return self._validate_yaml(body)
            if rest[:1] == ["repos"] and method == "POST":
                if rest[1:] == ["create"]:
                    return self._create_repo(body)
                if rest[1:] == ["delete"]:
                    return self._delete_repo(body)
            if rest and rest[0] in ("models", "datasets", "spaces") and len(rest) >= 3:
                repo_type = rest[0][:-1]
                repo_id = f"{rest[1]}/{rest[2]}"
                return self._repo_api(repo_type, repo_id, rest[3:], body)
            raise HubError(404, f"fake hub: no route for {method} {self.path}")
        # file downloads: /{repo}/resolve/..., /datasets/{repo}/resolve/..., /spaces/{repo}/resolve/...
        repo_type = "model"
        if seg and seg[0] in ("datasets", "spaces"):
            repo_type, seg = seg[0][:-1], seg[1:]
        if len(seg) >= 4 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{seg[0]}/{seg[1]}", seg[3:])
        if repo_type == "space" and len(seg) in (2, 3) and method in ("GET", "HEAD"):
            return self._space_page(f"{seg[0]}/{seg[1]}", seg[2] if len(seg) == 3 else "index.html")
        raise HubError(404, f"fake hub: no route for {method} {self.path}")

    def _repo_api(self, repo_type: str, repo_id: str, rest: list[str], body: bytes) -> None:
        method = self.command
        user = self._user()
        if method == "GET" and not rest:
            return self._repo_info(repo_type, repo_id, "main", user)
        if method == "GET" and rest[:1] == ["revision"] and len(rest) >= 2:
            return self._repo_info(repo_type, repo_id, "/".join(rest[1:]), user)
        if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]), user)
        if method == "GET" and rest == ["refs"]:
            return self._refs(repo_type, repo_id, user)
        if method == "GET" and rest[:1] == ["commits"] and len(rest) >= 2:
            return self._commits(repo_type, repo_id, "/".join(rest[1:]), user)
        if method == "POST" and rest[:1] == ["paths-info"] and len(rest) >= 2:
            return self._paths_info(repo_type, repo_id, "/".join(rest[1:]), body, user)
        if method == "POST" and rest[:1] == ["preupload"] and len(rest) >= 2:
            return self._preupload(repo_type, repo_id, "/".join(rest[1:]), body, user)
        if method == "POST" and rest[:1] == ["commit"] and len(rest) >= 2:
            return self._create_commit(repo_type, repo_id, "/".join(rest[1:]), body, user)
        if rest[:1] == ["discussions"]:
            if len(rest) == 1 and method == "GET":
                return self._list_discussions(repo_type, repo_id, user)
            if len(rest) == 1 and method == "POST":
                return self._new_discussion(repo_type, repo_id, body, user)
            if len(rest) == 2 and method == "GET":
                return self._discussion_details(repo_type, repo_id, int(rest[1]), user)
            if len(rest) == 3 and method == "POST":
                return self._discussion_change(repo_type, repo_id, int(rest[1]), rest[2], body, user)
        raise HubError(404, f"fake hub: no route for {method} {self.path}")

    # -- account and repos

    def _whoami(self) -> None:
        user = self._user(required=True)
        orgs = [
            {"type": "org", "name": org} for org, members in self.fake_hub.orgs.items() if user in members
        ]
        self._json(200, {
            "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user,
            "fullname": user, "email": None, "orgs": orgs,
            "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
        })  # fmt: skip

    def _create_repo(self, body: bytes) -> None:
        hub = self.fake_hub
        user = self._user(required=True)
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        namespace = payload.get("organization") or user
        name = payload.get("name") or ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name) or ".." in name:
            raise HubError(400, f"Invalid repo name {name!r}: use letters, digits, '-', '_' and '.'")
        if not self._can_write(user, namespace):
            raise HubError(
                403, f"You don't have the rights to create a {repo_type} under the namespace {namespace!r}"
            )
        repo_id = f"{namespace}/{name}"
        url = f"{hub.endpoint}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in hub.repos:
            raise HubError(409, f"You already created this {repo_type} repo: {repo_id}", None, {"url": url})
        sdk = payload.get("sdk")
        if repo_type == "space" and sdk not in SPACE_SDKS:
            raise HubError(400, f"Invalid Space SDK {sdk!r}")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        hub.create_repo(repo_id, repo_type, private=private, sdk=sdk, author=user)
        self._json(200, {"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]})

    def _delete_repo(self, body: bytes) -> None:
        user = self._user(required=True)
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        repo = self._get_repo(repo_type, repo_id, user)
        if not self._can_write(user, repo.owner):
            raise HubError(403, f"You don't have the rights to delete {repo_id}")
        del self.fake_hub.repos[(repo_type, repo_id)]
        self._json(200, {})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str, user: str | None) -> None:
        repo = self._get_repo(repo_type, repo_id, user)
        commit = self._commit_of(repo, revision)
        info: dict[str, Any] = {
            "id": repo_id, "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "author": repo.owner,
            "sha": commit.oid, "private": repo.private, "disabled": False, "gated": False,
            "lastModified": commit.date, "createdAt": repo.created_at, "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.files)], "likes": 0, "downloads": 0,
        }  # fmt: skip
        readme = commit.files.get("README.md")
        if readme is not None:
            data, _ = _front_matter(self.fake_hub._read_blob(readme).decode("utf-8", "replace"))
            if data:
                info["cardData"] = data
                tags = data.get("tags") or []
                info["tags"] = [tags] if isinstance(tags, str) else list(tags)
                if repo_type == "model":
                    info["library_name"] = data.get("library_name")
                    info["pipeline_tag"] = data.get("pipeline_tag")
        if repo_type == "space":
            info["sdk"] = repo.sdk
            info["runtime"] = {
                "stage": "RUNNING",
                "hardware": {"current": "cpu-basic", "requested": "cpu-basic"},
            }
        self._json(200, info)

    def _tree_entries(self, commit: Commit, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        hub = self.fake_hub
        prefix = prefix.strip("/")
        base = f"{prefix}/" if prefix else ""
        files, folders = [], set()
        for path, oid in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            rest = path[len(base) :]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(base + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                size = (hub.root / "blobs" / oid).stat().st_size
                files.append({"type": "file", "path": path, "size": size, "oid": oid})
        if prefix and not files and not folders:
            raise HubError(404, f"Entry not found: {prefix}", "EntryNotFound")
        dirs = [
            {"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0}
            for d in sorted(folders)
        ]
        return dirs + files

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str, user: str | None) -> None:
        repo = self._get_repo(repo_type, repo_id, user)
        commit = self._commit_of(repo, revision)
        recursive = self._query().get("recursive", "").lower() in ("1", "true")
        self._json(200, self._tree_entries(commit, path, recursive))

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, body: bytes, user: str | None) -> None:
        repo = self._get_repo(repo_type, repo_id, user)
        commit = self._commit_of(repo, revision)
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        out = []
        for path in paths:
            if path in commit.files:
                size = (self.fake_hub.root / "blobs" / commit.files[path]).stat().st_size
                out.append({"type": "file", "path": path, "size": size, "oid": commit.files[path]})
            elif any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
                out.append(
                    {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}
                )
        self._json(200, out)

    def _refs(self, repo_type: str, repo_id: str, user: str | None) -> None:
        repo = self._get_repo(repo_type, repo_id, user)
        branches = [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": o}
            for n, o in repo.refs.items()
            if not n.startswith("refs/")
        ]
        prs = [
            {"name": n.rsplit("/", 1)[-1], "ref": n, "targetCommit": o}
            for n, o in repo.refs.items()
            if n.startswith("refs/pr/")
        ]
        payload: dict[str, Any] = {"branches": branches, "tags": [], "converts": []}
        if self._query().get("include_prs"):
            payload["pullRequests"] = prs
        self._json(200, payload)

    def _commits(self, repo_type: str, repo_id: str, revision: str, user: str | None) -> None:
        repo = self._get_repo(repo_type, repo_id, user)
        commit: Commit | None = self._commit_of(repo, revision)
        out = []
        while commit is not None:
            out.append({"id": commit.oid, "title": commit.title, "message": commit.message, "date": commit.date,
                        "authors": [{"user": commit.author}]})  # fmt: skip
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(200, out)

    # -- uploads

    def _write_check(self, repo: Repo, revision: str, user: str | None, create_pr: bool) -> None:
        if user is None:
            raise HubError(401, "You must be authenticated to write. Set HF_TOKEN or run `hf auth login`.")
        if self._can_write(user, repo.owner):
            return
        if create_pr:
            return  # anyone may open a pull request on a public repo
        match = re.fullmatch(r"refs/pr/(\d+)", revision)
        if match:
            num = int(match.group(1))
            if any(d.num == num and d.author == user for d in repo.discussions):
                return  # the PR's author may push to its ref
        raise HubError(
            403,
            f"You don't have the rights to write to {repo.repo_id}: open a pull request (create_pr=True) instead.",
        )

    def _preupload(self, repo_type: str, repo_id: str, revision: str, body: bytes, user: str | None) -> None:
        repo = self._get_repo(repo_type, repo_id, user)
        create_pr = bool(self._query().get("create_pr"))
        self._write_check(repo, revision, user, create_pr)
        commit = self._commit_of(repo, revision)
        payload = json.loads(body or b"{}")
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": commit.files.get(f["path"]),
            }
            for f in payload.get("files", [])
        ]
        self._json(200, {"files": files, "commitOid": commit.oid})

    def _create_commit(
        self, repo_type: str, repo_id: str, revision: str, body: bytes, user: str | None
    ) -> None:
        hub = self.fake_hub
        repo = self._get_repo(repo_type, repo_id, user)
        create_pr = bool(self._query().get("create_pr"))
        self._write_check(repo, revision, user, create_pr)
        base = self._commit_of(repo, revision)
        if not revision.startswith("refs/pr/") and revision not in repo.refs:
            raise HubError(400, f"Cannot commit to a commit oid ({revision}); use a branch")
        header: dict[str, Any] = {}
        files = dict(base.files)
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                path = value["path"].lstrip("/")
                if not path or ".." in path.split("/"):
                    raise HubError(400, f"Invalid path {value['path']!r}")
                files[path] = hub._write_blob(base64.b64decode(value["content"]))
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(
                        404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound"
                    )
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
            elif key == "lfsFile":
                raise HubError(400, "fake hub: LFS uploads are not supported (preupload never asks for them)")
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        parent = header.get("parentCommit")
        if parent and not create_pr and parent != base.oid:
            raise HubError(412, f"A commit has happened since {parent}. Please refresh and try again.")
        summary = header.get("summary") or "Upload"
        commit = hub._commit(repo, base, files, summary, header.get("description", ""), user or "")
        prefix = f"{hub.endpoint}/{URL_PREFIX[repo_type]}{repo_id}"
        pr_url = None
        if create_pr:
            num = len(repo.discussions) + 1
            repo.discussions.append(
                Discussion(
                    num, summary, user or "", True, _now(), header.get("description", ""), base=revision
                )
            )
            repo.refs[f"refs/pr/{num}"] = commit.oid
            pr_url = f"{prefix}/discussions/{num}"
        else:
            repo.refs[revision] = commit.oid
        self._json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{prefix}/commit/{commit.oid}",
                "pullRequestUrl": pr_url,
            },
        )

    # -- discussions and pull requests

    def _discussion_json(self, repo: Repo, d: Discussion) -> dict[str, Any]:
        return {
            "num": d.num, "title": d.title, "author": {"name": d.author}, "createdAt": d.created_at,
            "status": d.status, "isPullRequest": d.is_pull_request, "pinned": False, "numComments": len(d.comments) + 1,
            "repo": {"name": repo.repo_id, "type": repo.repo_type},
        }  # fmt: skip

    def _list_discussions(self, repo_type: str, repo_id: str, user: str | None) -> None:
        repo = self._get_repo(repo_type, repo_id, user)
        query = self._query()
        items = list(reversed(repo.discussions))
        kind = query.get("type", "all")
        if kind == "pull_request":
            items = [d for d in items if d.is_pull_request]
        elif kind == "discussion":
            items = [d for d in items if not d.is_pull_request]
        if query.get("status", "all") != "all":
            items = [d for d in items if d.status == query["status"]]
        if query.get("author"):
            items = [d for d in items if d.author == query["author"]]
        self._json(
            200,
            {
                "discussions": [self._discussion_json(repo, d) for d in items],
                "count": len(items),
                "start": 0,
                "numClosedDiscussions": 0,
            },
        )

    def _new_discussion(self, repo_type: str, repo_id: str, body: bytes, user: str | None) -> None:
        user = self._user(required=True)
        repo = self._get_repo(repo_type, repo_id, user)
        payload = json.loads(body or b"{}")
        num = len(repo.discussions) + 1
        pr = bool(payload.get("pullRequest"))
        repo.discussions.append(
            Discussion(num, payload.get("title", ""), user, pr, _now(), payload.get("description") or "")
        )
        if pr:
            repo.refs[f"refs/pr/{num}"] = repo.refs["main"]
        self._json(
            200,
            {
                "num": num,
                "url": f"{self.fake_hub.endpoint}/{URL_PREFIX[repo_type]}{repo_id}/discussions/{num}",
            },
        )

    def _find_discussion(self, repo: Repo, num: int) -> Discussion:
        for d in repo.discussions:
            if d.num == num:
                return d
        raise HubError(404, f"Discussion {num} not found")

    def _discussion_details(self, repo_type: str, repo_id: str, num: int, user: str | None) -> None:
        repo = self._get_repo(repo_type, repo_id, user)
        d = self._find_discussion(repo, num)
        events = [{"id": f"{num}-0", "type": "comment", "createdAt": d.created_at, "author": {"name": d.author},
                   "data": {"latest": {"raw": d.description, "html": d.description}, "numEdits": 0, "editors": [],
                            "editReactions": [], "isReport": False, "hidden": False, "edited": False}}]  # fmt: skip
        events += d.comments
        details = self._discussion_json(repo, d) | {"events": events, "filesWithConflicts": [], "diff": ""}
        if d.is_pull_request:
            details["changes"] = {"base": f"refs/heads/{d.base}"}
            if d.merge_commit:
                details["changes"]["mergeCommitId"] = d.merge_commit
        self._json(200, details)

    def _discussion_change(
        self, repo_type: str, repo_id: str, num: int, action: str, body: bytes, user: str | None
    ) -> None:
        user = self._user(required=True)
        repo = self._get_repo(repo_type, repo_id, user)
        d = self._find_discussion(repo, num)
        payload = json.loads(body or b"{}") if body else {}
        event = {"id": f"{num}-{len(d.comments) + 1}", "createdAt": _now(), "author": {"name": user}}
        if action == "comment":
            event |= {"type": "comment", "data": {"latest": {"raw": payload.get("comment", ""), "html": payload.get("comment", "")},
                                                  "numEdits": 0, "editors": [], "editReactions": [], "isReport": False, "hidden": False,
                                                  "edited": False}}  # fmt: skip
            d.comments.append(event)
            return self._json(200, {"newMessage": event})
        if not (self._can_write(user, repo.owner) or (action == "status" and user == d.author)):
            raise HubError(403, f"You don't have the rights to {action} discussion {num} of {repo_id}")
        if action == "status":
            d.status = payload.get("status", "closed")
            event |= {"type": "status-change", "data": {"status": d.status}}
            d.comments.append(event)
            return self._json(200, {"newStatus": event})
        if action == "merge":
            if not d.is_pull_request or d.status != "open":
                raise HubError(400, f"Discussion {num} is not an open pull request")
            head = repo.commits[repo.refs[f"refs/pr/{num}"]]
            main = repo.commits[repo.refs[d.base]]
            files = dict(main.files)
            base_commit = repo.commits.get(head.parent) if head.parent else None
            # apply the PR's changes relative to the commit it was opened on (a three-way merge of trees)
            base_files = base_commit.files if base_commit else {}
            for path, oid in head.files.items():
                if base_files.get(path) != oid:
                    files[path] = oid
            for path in base_files:
                if path not in head.files:
                    files.pop(path, None)
            merged = self.fake_hub._commit(repo, main, files, f"Merge pull request #{num}", d.title, user)
            repo.refs[d.base] = merged.oid
            d.status, d.merge_commit = "merged", merged.oid
            return self._json(200, {})
        raise HubError(404, f"Unknown discussion action {action!r}")

    # -- downloads and card validation

    def _resolve(self, repo_type: str, repo_id: str, rest: list[str]) -> None:
        user = self._user()
        repo = self._get_repo(repo_type, repo_id, user)
        # the revision is one segment (``refs%2Fpr%2F1`` arrives unquoted as ``refs/pr/1``)
        revision, path = rest[0], "/".join(rest[1:])
        commit = self._commit_of(repo, revision)
        oid = commit.files.get(path)
        if oid is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        content = self.fake_hub._read_blob(oid)
        headers = {"ETag": f'"{oid}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        self._send(200, content, headers, content_type="application/octet-stream")

    def _space_page(self, repo_id: str, path: str) -> None:
        repo = self._get_repo("space", repo_id, self._user())
        commit = self._commit_of(repo, "main")
        if repo.sdk != "static" or path not in commit.files:
            raise HubError(404, f"{path} not found in static Space {repo_id}")
        kind = "text/html" if path.endswith(".html") else "application/octet-stream"
        self._send(200, self.fake_hub._read_blob(commit.files[path]), content_type=kind)

    def _validate_yaml(self, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        problems = validate_card(payload.get("content", ""), payload.get("repoType", "model"))
        if problems:
            return self._send(400, "\n".join(problems).encode(), content_type="text/plain")
        self._json(200, {"errors": [], "warnings": []})


# ---------------------------------------------------------------------- pointing the client at it


@contextlib.contextmanager
def use_fake_hub(
    hub: FakeHub, *, token: str | None = None, home: str | Path | None = None
) -> Iterator[FakeHub]:
    """Point ``huggingface_hub`` (and anything on top of it) at ``hub`` until the block ends.

    Sets ``HF_ENDPOINT``, ``HF_TOKEN`` (``token``, default the hub's first valid token; ``""`` for none),
    ``HF_HUB_OFFLINE=0`` and ``HF_HOME`` / ``HF_HUB_CACHE`` (under ``home``, default a temporary folder),
    and patches the values ``huggingface_hub.constants`` computed at import, plus the endpoint of the
    module-level ``HfApi`` behind ``huggingface_hub.create_repo`` and friends. Everything is restored after.
    """
    from huggingface_hub import constants, hf_api

    own_home = home is None
    home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="emtbench-hf-home-"))
    token = hub.token if token is None else token
    env = {
        "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
        "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_TOKEN": token or None,
        "HUGGING_FACE_HUB_TOKEN": None, "HF_HUB_DISABLE_IMPLICIT_TOKEN": None,
    }  # fmt: skip
    patches = {
        "ENDPOINT": hub.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }
    saved_env = {key: os.environ.get(key) for key in env}
    saved_constants = {key: getattr(constants, key) for key in patches if hasattr(constants, key)}
    saved_endpoint = hf_api.api.endpoint
    try:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for key, value in patches.items():
            setattr(constants, key, value)
        hf_api.api.endpoint = hub.endpoint
        yield hub
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for key, value in saved_constants.items():
            setattr(constants, key, value)
        hf_api.api.endpoint = saved_endpoint
        if own_home:
            import shutil

            shutil.rmtree(home, ignore_errors=True)


# ---------------------------------------------------------------------- foreground server


def main(argv: list[str] | None = None) -> int:
    """``python -m emtbench.testing.fake_hub``: serve a fake Hub until Ctrl-C / SIGTERM."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m emtbench.testing.fake_hub",
        description="Run emtbench's fake Hugging Face Hub on 127.0.0.1 in the foreground, to try "
        "push / submit / worker / publish offline. It is NOT the Hugging Face Hub: repos live in memory and "
        "are gone when it stops; there is no LFS (keep files small). Point huggingface_hub at it with the "
        "printed HF_ENDPOINT and HF_TOKEN.",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument(
        "--root", type=Path, default=None, help="folder for the blobs (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: give 0..65535")
    hub = FakeHub(root=args.root)
    try:
        hub.start(args.port)
    except OSError as error:
        print(f"fake Hub: cannot listen on 127.0.0.1:{args.port}: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    (other_token, other_user) = next(((t, u) for t, u in hub.users.items() if t != hub.token), (None, None))
    print(f"# emtbench fake Hub (NOT huggingface.co; in memory, blobs in {hub.root}); Ctrl-C stops it")
    print(f"export HF_ENDPOINT={hub.endpoint}")
    print(f"export HF_TOKEN={hub.token}  # user {hub.user}")
    if other_token:
        print(f"export OTHER_HF_TOKEN={other_token}  # user {other_user}: another person")
    print("export HF_HUB_OFFLINE=0")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        hub.stop()
    print("# fake Hub stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
