"""The one place emtbench talks to the Hub about errors: credentials checked before any work, and every
Hub failure turned into a named :class:`EmtbenchError` that says what was being done and how to fix it.

Used by uploads (:mod:`emtbench.hub.push`, ``--push-to-hub`` of finetune/merge/tailor), downloads
(:mod:`emtbench.hub.download`) and the leaderboard's publish/submit/worker.

Tokens are never handled here: huggingface_hub finds them the usual way (``HF_TOKEN``, or the cache
``hf auth login`` writes) and ``HF_ENDPOINT`` points it at another Hub. Nothing in emtbench writes a
token anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.secrets import redact_text

LOGIN_FIX = "set HF_TOKEN to a token with write access, or run `hf auth login`"
REPO_TYPES = ("model", "dataset", "space")
_STATUS_FIXES = {
    400: "check the repo id and the card's metadata",
    401: LOGIN_FIX,
    403: "the token may not write there: use a token with write access to that namespace, write to your own "
    "namespace, or open a pull request (`emtbench push --create-pr`, `emtbench submit`)",
    404: "check the repo id (OWNER/NAME), its type, and that your token can see it",
    409: "the repo or pull request exists already (perhaps with another type), or the branch moved: retry, "
    "or choose another repo id",
    412: "the repo changed meanwhile: retry",
    429: "the Hub is rate-limiting you: wait and retry",
}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection errors (huggingface_hub does not wrap them): the Hub is unreachable."""
    kinds: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx", "requests"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        kind = getattr(module, "TransportError", None) or getattr(module, "ConnectionError", None)
        if isinstance(kind, type):
            kinds.append(kind)
    return tuple(kinds)


def hub_api():
    """A fresh ``HfApi`` (it reads ``HF_ENDPOINT`` and the token when it is made)."""
    from huggingface_hub import HfApi, constants

    return HfApi(endpoint=constants.ENDPOINT)


def check_repo_id(repo_id: str, *, flag: str) -> str:
    """``USER/NAME`` or a named error (huggingface_hub's own validator decides what a name may hold)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise EmtbenchError(f"{repo_id!r} is not a Hub repo id", where=flag, fix="write it as USER/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise EmtbenchError(str(error).splitlines()[0], where=flag, fix="write it as USER/NAME") from None
    return repo_id


def whoami(api: Any = None) -> dict[str, Any]:
    """The Hub account the token belongs to; a named error (before any work) when there is none."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    if api is None and not get_token():
        raise EmtbenchError("no Hub token found", where="HF_TOKEN", fix=LOGIN_FIX)
    api = api or hub_api()
    try:
        return api.whoami()
    except LocalTokenNotFoundError:
        raise EmtbenchError("no Hub token found", where="HF_TOKEN", fix=LOGIN_FIX) from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            raise EmtbenchError(
                f"the Hub refused the token ({status})", where="HF_TOKEN", fix=LOGIN_FIX
            ) from None
        raise hub_error(error, "checking the token") from None
    except _transport_errors() as error:  # connection refused, DNS, offline mode: the Hub is unreachable
        raise hub_error(error, "checking the token") from None


def can_write(user: dict[str, Any], repo_id: str) -> bool:
    """Whether the account ``whoami`` returned owns the namespace of ``repo_id`` (or is in its org)."""
    namespace = repo_id.split("/")[0]
    names = {user.get("name")} | {org.get("name") for org in user.get("orgs") or [] if isinstance(org, dict)}
    return namespace in names


def check_credentials(repo_id: str | None = None) -> str:
    """The user name the current token belongs to; a named error (with the fix) when it is missing or bad,
    or when ``repo_id`` lies in a namespace the token cannot create repos in.

    Called before any training or merging when ``--push-to-hub`` is set, so a bad token costs nothing.
    """
    user = whoami()
    name = str(user.get("name"))
    if repo_id is not None:
        if not isinstance(repo_id, str) or repo_id.count("/") != 1:
            raise EmtbenchError(
                f"{repo_id!r} is not a Hub repo id",
                where="--push-to-hub",
                fix=f"write OWNER/NAME, e.g. {name}/my-model",
            )
        if not can_write(user, repo_id):
            namespace, rest = repo_id.split("/")
            raise EmtbenchError(f"the token belongs to {name!r}, who cannot create repos under {namespace!r}",
                                where=repo_id, fix=f"push to {name}/{rest}, or use a token of {namespace!r}")  # fmt: skip
    return name


def _unreachable(error: Exception, doing: str, retry: str | None) -> EmtbenchError:
    from huggingface_hub import constants

    first = redact_text(str(error)).splitlines()[0] if str(error) else type(error).__name__
    fix = "check the network, or HF_ENDPOINT if you use another Hub"
    return EmtbenchError(
        f"{doing}: cannot reach the Hub at {constants.ENDPOINT} ({first})",
        fix=f"{fix}; {retry}" if retry else fix,
    )


def hub_error(
    error: Exception, doing: str, repo: str | None = None, *, retry: str | None = None
) -> EmtbenchError:
    """One Hub exception as an EmtbenchError naming ``doing`` (e.g. "pushing DIR") and ``repo``, with the fix.

    ``retry`` (e.g. "the folder is unchanged; retry with `emtbench push`") is added to the fix of failures
    that a retry may cure (412, 429, 5xx, an unreachable Hub).
    """
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = repo
    first = redact_text(str(error)).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, EmtbenchError):
        return error
    if isinstance(error, OfflineModeIsEnabled):
        return EmtbenchError(f"{doing}: offline mode is on", where=where, fix="unset HF_HUB_OFFLINE")
    if isinstance(error, HFValidationError):
        return EmtbenchError(f"{doing}: {first}", where=where, fix="write the repo id as USER/NAME")
    if isinstance(error, LocalTokenNotFoundError):
        return EmtbenchError(f"{doing}: no Hub token found", where="HF_TOKEN", fix=LOGIN_FIX)
    if isinstance(error, GatedRepoError):
        return EmtbenchError(
            f"{doing}: the repo is gated", where=where, fix="accept its conditions on the Hub first"
        )
    if isinstance(error, RepositoryNotFoundError):
        return EmtbenchError(
            f"{doing}: no such repo, or it is private and the token cannot see it",
            where=where,
            fix="check the repo id and its type; " + LOGIN_FIX,
        )
    if isinstance(error, RevisionNotFoundError):
        return EmtbenchError(f"{doing}: no such revision", where=where, fix="check --revision")
    if isinstance(error, EntryNotFoundError) and not isinstance(error, LocalEntryNotFoundError):
        return EmtbenchError(f"{doing}: no such file in the repo", where=where, fix="check the path")
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        fix = _STATUS_FIXES.get(status) or ("retry later" if status and status >= 500 else None)
        if retry and (status in (412, 429) or (status or 0) >= 500):
            fix = f"{fix}; {retry}"
        return EmtbenchError(f"{doing}: the Hub answered {status}: {first}", where=where, fix=fix)
    if isinstance(error, (LocalEntryNotFoundError, *_transport_errors())):  # the Hub could not be asked
        return _unreachable(error, doing, retry)
    return EmtbenchError(f"{doing}: {type(error).__name__}: {first}", where=where, fix=retry)


@contextmanager
def hub_errors(doing: str, repo: str | None = None, *, retry: str | None = None) -> Iterator[None]:
    """Run Hub calls; their errors leave as :class:`EmtbenchError` naming ``doing`` and ``repo``."""
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError

    try:
        yield
    except EmtbenchError:
        raise
    except (HFValidationError, HfHubHTTPError, EntryNotFoundError, *_transport_errors()) as error:
        raise hub_error(error, doing, repo, retry=retry) from None
