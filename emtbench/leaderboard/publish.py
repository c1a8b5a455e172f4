"""``emtbench.publish_leaderboard``: a built leaderboard folder → a static Hugging Face Space.

A Space of SDK ``static`` serves the ``index.html`` at its root; its README front matter says
``sdk: static``. The page is self-contained (inline CSS, JS and SVG), so the folder uploads as it is,
with ``leaderboard.json`` and ``leaderboard.csv`` beside it for anyone who wants the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import read_json
from emtbench.hub.calls import check_repo_id, hub_api, hub_errors, whoami

SPACE_FILES = ("index.html", "leaderboard.json", "leaderboard.csv")


@dataclass
class PublishedSite:
    """Where the page went: the Space, the commit, and the files uploaded."""

    repo_id: str
    url: str
    commit_url: str
    files: list[str]


def space_readme(title: str, *, private: bool = False) -> str:
    """The Space's README: front matter the Hub reads (``sdk: static``), then a line on what it is."""
    import yaml

    front = {
        "title": title[:60] or "emtbench leaderboard",
        "emoji": "📉",
        "colorFrom": "blue",
        "colorTo": "gray",
        "sdk": "static",
        "app_file": "index.html",
        "pinned": False,
        "tags": ["leaderboard", "emtbench"],
    }
    text = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
    return (
        f"---\n{text}---\n\n"
        "A forgetting leaderboard built by `emtbench leaderboard build` and published by "
        "`emtbench leaderboard publish`.\nThe numbers are in `leaderboard.json` and `leaderboard.csv`.\n"
    )


def _site_title(site: Path) -> str:
    try:
        data = read_json(site / "leaderboard.json", what="leaderboard data")
    except EmtbenchError:
        return "emtbench leaderboard"
    title = data.get("title") if isinstance(data, dict) else None
    return title if isinstance(title, str) and title else "emtbench leaderboard"


def publish_leaderboard(site: str | Path, repo_id: str, *, private: bool = False) -> PublishedSite:
    """Upload a folder written by :func:`~emtbench.build_leaderboard` as the static Space ``repo_id``.

    Example::

        import emtbench
        emtbench.build_leaderboard("leaderboard.yaml", "site/")
        space = emtbench.publish_leaderboard("site/", "you/emt-leaderboard")
        print(space.url)

    The token is checked (``whoami``) before anything is read or created; the Space is created if it
    does not exist (an existing one must be a static Space).
    """
    from huggingface_hub import CommitOperationAdd

    site = Path(site)
    check_repo_id(repo_id, flag="--repo-id")
    if not (site / "index.html").is_file():
        raise EmtbenchError(
            f"{site} holds no index.html",
            where="SITE",
            fix="build it first: emtbench leaderboard build MANIFEST --out SITE",
        )
    api = hub_api()
    whoami(api)
    with hub_errors("creating the Space", repo_id):
        repo = api.create_repo(repo_id, repo_type="space", space_sdk="static", private=private, exist_ok=True)
        info = api.repo_info(repo_id, repo_type="space")
    sdk = getattr(info, "sdk", None)
    if sdk not in (None, "static"):
        raise EmtbenchError(
            f"the Space exists and runs the {sdk!r} SDK, not a static page",
            where="--repo-id",
            fix="choose another Space name, or change its SDK to static in its settings",
        )
    names = [name for name in SPACE_FILES if (site / name).is_file()]
    operations = [CommitOperationAdd(name, str(site / name)) for name in names]
    operations.append(CommitOperationAdd("README.md", space_readme(_site_title(site)).encode("utf-8")))
    with hub_errors("uploading the page", repo_id):
        commit = api.create_commit(
            repo_id,
            operations,
            repo_type="space",
            commit_message="Publish the leaderboard (emtbench leaderboard publish)",
        )
    return PublishedSite(repo_id, str(repo), str(commit.commit_url), [*names, "README.md"])
