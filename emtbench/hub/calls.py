"""Calling the Hub: credentials checked before any work, and Hub errors turned into named errors with the fix.

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
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

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
        raise _named(error, "checking the token", None) from None
    except OSError as error:  # connection refused, DNS: the Hub is not reachable at all
        raise _unreachable(error) from None


def can_write(user: dict[str, Any], repo_id: str) -> bool:
    """Whether the account ``whoami`` returned owns the namespace of ``repo_id`` (or is in its org)."""
    namespace = repo_id.split("/")[0]
    names = {user.get("name")} | {org.get("name") for org in user.get("orgs") or [] if isinstance(org, dict)}
    return namespace in names


def _unreachable(error: Exception) -> EmtbenchError:
    from huggingface_hub import constants

    return EmtbenchError(
        f"cannot reach the Hub at {constants.ENDPOINT} ({redact_text(str(error)).splitlines()[0]})",
        fix="check the network, or HF_ENDPOINT if you use another Hub",
    )


def _named(error: Exception, doing: str, repo: str | None) -> EmtbenchError:
    """One Hub exception as an EmtbenchError that says what was being done and how to fix it."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = repo
    first = redact_text(str(error)).splitlines()[0] if str(error) else type(error).__name__
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
    if isinstance(error, EntryNotFoundError):
        return EmtbenchError(f"{doing}: no such file in the repo", where=where, fix="check the path")
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        fixes = {
            401: LOGIN_FIX,
            403: "the token may not write there: use a token with write access, or submit as a pull request",
            409: "the repo or pull request exists already, or the branch moved: retry",
            429: "the Hub is rate-limiting you: wait and retry",
        }
        fix = fixes.get(status) or ("retry later" if status and status >= 500 else None)
        return EmtbenchError(f"{doing}: the Hub answered {status}: {first}", where=where, fix=fix)
    return EmtbenchError(f"{doing}: {first}", where=where)


@contextmanager
def hub_errors(doing: str, repo: str | None = None) -> Iterator[None]:
    """Run Hub calls; their errors leave as :class:`EmtbenchError` naming ``doing`` and ``repo``."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        LocalTokenNotFoundError,
    )

    try:
        yield
    except EmtbenchError:
        raise
    except HFValidationError as error:
        raise EmtbenchError(f"{doing}: {str(error).splitlines()[0]}", where=repo) from None
    except LocalTokenNotFoundError:
        raise EmtbenchError(f"{doing}: no Hub token found", where="HF_TOKEN", fix=LOGIN_FIX) from None
    except LocalEntryNotFoundError as error:  # not cached, and the Hub could not be asked
        raise _unreachable(error) from None
    except (HfHubHTTPError, EntryNotFoundError) as error:
        raise _named(error, doing, repo) from None
    except OSError as error:
        raise _unreachable(error) from None
