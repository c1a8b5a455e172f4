"""Uploading model folders to the Hugging Face Hub: credentials checked first, Hub errors named with their fix
(both from :mod:`emtbench.hub.calls`, the one Hub-error module).

Tokens come only the huggingface_hub way (``HF_TOKEN``, or the login cache of ``hf auth login``);
emtbench never reads, prints or writes one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.records import CARD_FILE, RUN_FILE
from emtbench.hub.calls import check_credentials, hub_api, hub_errors


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
        with hub_errors("validating the model card", repo_id):
            check_card((folder / CARD_FILE).read_text())
    api = hub_api()
    retry = f"the folder is unchanged; retry with `emtbench push {folder} {repo_id}`"
    with hub_errors(f"pushing {folder}", repo_id, retry=retry):
        if not create_pr:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", create_pr=create_pr,
            commit_message=commit_message or f"Upload {folder.name} with emtbench",
            ignore_patterns=[".*", "*.checkpoints/**"],
        )  # fmt: skip
    return str(info.pr_url or info.commit_url)


def push_to_hub(output_dir: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Upload a finished model folder (what ``--push-to-hub`` runs after training or merging)."""
    return push_folder(output_dir, repo_id, private=private)
