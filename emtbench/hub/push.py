"""Uploading model folders to the Hugging Face Hub: credentials checked first, Hub errors named with their fix.

Tokens come only the huggingface_hub way (``HF_TOKEN``, or the login cache of ``hf auth login``);
emtbench never reads, prints or writes one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.records import CARD_FILE, RUN_FILE

LOGIN_FIX = "set HF_TOKEN to a token with write access, or run `hf auth login`"


def hub_error(
    error: Exception, *, repo_id: str | None = None, action: str = "talk to the Hub"
) -> EmtbenchError:
    """An :class:`EmtbenchError` that says what a Hub failure means and how to fix it."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    where = repo_id or "the Hub"
    if isinstance(error, OfflineModeIsEnabled):
        return EmtbenchError(f"cannot {action}: offline mode is on", where=where, fix="unset HF_HUB_OFFLINE")
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, HfHubHTTPError) and status is not None:
        if status == 401:
            return EmtbenchError(
                f"cannot {action}: the Hub rejected the credentials ({message})", where=where, fix=LOGIN_FIX
            )
        if status == 403:
            return EmtbenchError(f"cannot {action}: the token may not write to {where}", where=where,
                                 fix="use a token with write access to that namespace, push to your own namespace, or open a pull request (--create-pr)")  # fmt: skip
        if status == 404:
            return EmtbenchError(f"cannot {action}: {where} was not found", where=where,
                                 fix="check the repo id (OWNER/NAME) and that your token can see it")  # fmt: skip
        if status == 409:
            return EmtbenchError(f"cannot {action}: conflict on {where} ({message})", where=where,
                                 fix="the repo exists with another type or a push is in progress; retry, or choose another repo id")  # fmt: skip
        if status == 412:
            return EmtbenchError(
                f"cannot {action}: {where} changed meanwhile", where=where, fix="retry the push"
            )
        if status == 400:
            return EmtbenchError(f"cannot {action}: the Hub refused the request ({message})", where=where,
                                 fix="check the repo id and the card's metadata")  # fmt: skip
        return EmtbenchError(
            f"cannot {action}: Hub error {status} ({message})",
            where=where,
            fix="retry later; the folder is unchanged",
        )
    return EmtbenchError(f"cannot {action}: {type(error).__name__}: {message}", where=where,
                         fix="check your connection and HF_ENDPOINT; the folder is unchanged, retry with `emtbench push`")  # fmt: skip


def check_credentials(repo_id: str | None = None) -> str:
    """The user name the current token belongs to; an EmtbenchError (with the fix) when it is missing or bad.

    Called before any training or merging when ``--push-to-hub`` is set, so a bad token costs nothing.
    """
    from huggingface_hub import HfApi, get_token

    if not get_token():
        raise EmtbenchError("no Hugging Face token found", where=repo_id or "--push-to-hub", fix=LOGIN_FIX)
    try:
        info = HfApi().whoami()
    except Exception as error:
        raise hub_error(error, repo_id=repo_id, action="check the Hub credentials") from None
    user = str(info.get("name"))
    if repo_id is not None:
        if "/" not in repo_id or repo_id.count("/") != 1:
            raise EmtbenchError(
                f"{repo_id!r} is not a Hub repo id",
                where="--push-to-hub",
                fix="write OWNER/NAME, e.g. {user}/my-model",
            )
        namespace = repo_id.split("/")[0]
        orgs = {org.get("name") for org in info.get("orgs", []) if isinstance(org, dict)}
        if namespace != user and namespace not in orgs:
            raise EmtbenchError(f"the token belongs to {user!r}, who cannot create repos under {namespace!r}",
                                where=repo_id, fix=f"push to {user}/{repo_id.split('/')[1]}, or use a token of {namespace!r}")  # fmt: skip
    return user


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    create_pr: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload an existing model folder to ``repo_id``; returns the commit (or pull request) URL.

    The card is regenerated with the repo id as its title (an emtbench folder) and validated by the Hub
    before any upload; the folder's run record gets ``hub_id`` so that models built on it name this
    repo as their ``base_model``. Retrying after a failure is safe (unchanged files are skipped).
    """
    from huggingface_hub import HfApi

    from emtbench.hub.cards import check_card, write_card

    folder = Path(folder)
    if not folder.is_dir() or (
        not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file()
    ):
        raise EmtbenchError(f"{folder} is not a model folder (no config.json or adapter_config.json)", where=str(folder),
                            fix="pass a folder written by save_pretrained or an emtbench command")  # fmt: skip
    if "/" not in repo_id:
        raise EmtbenchError(f"{repo_id!r} is not a Hub repo id", where="REPO_ID", fix="write OWNER/NAME")
    check_credentials(None if create_pr else repo_id)
    run_file = folder / RUN_FILE
    if run_file.is_file():
        record: dict[str, Any] = json.loads(run_file.read_text())
        record["hub_id"] = repo_id
        run_file.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        write_card(folder, name=repo_id)
    if (folder / CARD_FILE).is_file():
        try:
            check_card((folder / CARD_FILE).read_text())
        except EmtbenchError:
            raise
        except Exception as error:
            raise hub_error(error, repo_id=repo_id, action="validate the model card") from None
    api = HfApi()
    try:
        if not create_pr:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", create_pr=create_pr,
            commit_message=commit_message or f"Upload {folder.name} with emtbench",
            ignore_patterns=[".*", "*.checkpoints/**"],
        )  # fmt: skip
    except Exception as error:
        raise hub_error(error, repo_id=repo_id, action=f"push {folder}") from None
    return str(info.pr_url or info.commit_url)


def push_to_hub(output_dir: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Upload a finished model folder (what ``--push-to-hub`` runs after training or merging)."""
    return push_folder(output_dir, repo_id, private=private)
