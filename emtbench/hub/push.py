"""Uploading finished model folders to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path


def push_to_hub(output_dir: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Upload a finished model folder; the token comes from the usual HF environment or login."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(folder_path=str(output_dir), repo_id=repo_id, repo_type="model")
    return str(getattr(info, "commit_url", info))
