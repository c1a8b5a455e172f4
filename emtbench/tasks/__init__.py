"""EMT classification tasks for lm-evaluation-harness (YAML under ``emt/``) and their data."""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
"""Folder to pass to lm-eval's ``--include_path``."""
