"""``emtbench.build_leaderboard``: a run manifest -> a static site (index.html, leaderboard.json, .csv).

Also :func:`make_server`, which ``emtbench leaderboard serve`` runs, for a look at a built site.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from emtbench.core.errors import EmtbenchError
from emtbench.core.paths import check_writable_dir

OUTPUT_FILES = ("index.html", "leaderboard.json", "leaderboard.csv")


@dataclass
class LeaderboardSite:
    """What :func:`build_leaderboard` wrote."""

    folder: Path
    runs: int
    tasks: int
    problems: list[str] = field(default_factory=list)
    """Parts left out (only with ``allow_partial``), each naming its file and field."""

    @property
    def files(self) -> list[Path]:
        return [self.folder / name for name in OUTPUT_FILES]


def write_site(out_dir: Path, contents: dict[str, str]) -> None:
    """Write every file to a temporary name first, then rename: a failure leaves no half-written site."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, text in contents.items():
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", newline="", dir=out_dir, prefix=f".{name}.", delete=False
            ) as handle:
                staged.append((Path(handle.name), out_dir / name))
                handle.write(text)
        for temporary, final in staged:
            os.chmod(temporary, 0o644)  # a site is meant to be read by a web server
            os.replace(temporary, final)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


def build_leaderboard(
    manifest: str | Path, out: str | Path, *, allow_partial: bool = False, progress: bool = True
) -> LeaderboardSite:
    """Build the forgetting leaderboard of the runs a manifest lists into the folder ``out``.

    Example::

        import emtbench
        site = emtbench.build_leaderboard("leaderboard.yaml", "site/")
        print(site.files[0], site.runs, "runs")

    Every problem (missing or malformed results, a task missing from a run, an unknown base) is
    listed with its file and field; nothing is written unless ``allow_partial``.
    """
    from emtbench.leaderboard.build import load_leaderboard
    from emtbench.leaderboard.render import render_csv, render_html, render_json

    out = Path(out)
    check_writable_dir(out, flag="--out")  # a file or an unwritable folder: refused before reading runs
    leaderboard = load_leaderboard(manifest, progress=progress)  # a path, or an hf:// file
    if leaderboard.problems:
        listing = "\n".join(f"  - {problem}" for problem in leaderboard.problems)
        if not allow_partial:
            raise EmtbenchError(
                f"{len(leaderboard.problems)} problem(s); nothing was written:\n{listing}",
                where=str(manifest),
                fix="fix the entries above, or pass --allow-partial to build without those parts",
            )
        print(
            f"emtbench leaderboard: skipped {len(leaderboard.problems)} part(s):\n{listing}", file=sys.stderr
        )
    if not leaderboard.rows:
        raise EmtbenchError("no run could be loaded; nothing was written", where=str(manifest))
    write_site(
        out,
        {
            "index.html": render_html(leaderboard),
            "leaderboard.json": render_json(leaderboard),
            "leaderboard.csv": render_csv(leaderboard),
        },
    )
    return LeaderboardSite(
        out, len(leaderboard.rows), len(leaderboard.tasks), [str(p) for p in leaderboard.problems]
    )


def make_server(site_dir: Path, host: str = "127.0.0.1", port: int = 8000):
    """An HTTP server for a built site folder (port 0 picks a free port); the caller runs it."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    if not (site_dir / "index.html").is_file():
        raise EmtbenchError(
            f"{site_dir} holds no index.html",
            where="SITE_DIR",
            fix="build it first: emtbench leaderboard build MANIFEST --out SITE_DIR",
        )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site_dir))
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        raise EmtbenchError(
            f"cannot listen on {host}:{port} ({error.strerror})", fix="pick another --port"
        ) from None
