"""Screenshot a built leaderboard page with headless Chromium (for the README and model cards).

Uses Chromium's own ``--screenshot`` mode, so nothing beyond Debian's ``chromium`` package is needed.
The page is self-contained, so it is opened straight from disk with networking disabled.

Usage:
  python scripts/screenshot_leaderboard.py SITE_DIR --out docs/leaderboard.png [--width 1400 --height 1800]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("site", type=Path, help="folder written by `emtbench leaderboard build --out`")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1800)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()

    page = (args.site / "index.html").resolve()
    if not page.is_file():
        print(
            f"error: {page} not found; build it with `emtbench leaderboard build MANIFEST --out {args.site}`"
        )
        return 2
    if not Path(args.chromium).exists():
        print("error: chromium not found; install Debian's `chromium` package or pass --chromium PATH")
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        partial = Path(profile) / "shot.png"
        command = [
            args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
            f"--window-size={args.width},{args.height}", f"--screenshot={partial}", page.as_uri(),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not partial.is_file():
            print(f"error: chromium failed ({done.returncode}):\n{done.stderr[-2000:]}")
            return 1
        shutil.move(partial, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
