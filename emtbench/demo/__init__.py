"""``emtbench demo``: the EMT forgetting experiment end to end on the offline flagship.

Every step calls a public API function (:func:`emtbench.build_base`, :func:`emtbench.evaluate`,
:func:`emtbench.finetune`, :func:`emtbench.tailor`, :func:`emtbench.merge`,
:func:`emtbench.build_leaderboard`) and prints the ``emtbench`` command that does the same; the demo
only chooses their arguments (:mod:`.plan`), keeps each stage's output in its own folder under ``--out``
so a rerun resumes (:mod:`.runner`), and summarises the results (:mod:`.report`).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("run_demo", "DemoResult"):
        from emtbench.demo import runner

        return getattr(runner, name)
    if name == "DemoOptions":
        from emtbench.demo.options import DemoOptions

        return DemoOptions
    raise AttributeError(f"module 'emtbench.demo' has no attribute {name!r}")
