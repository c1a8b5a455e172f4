"""Hub model cards for emtbench checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emtbench.core.records import RUN_FILE

FORGETTING_START = "<!-- emtbench:forgetting:start -->"
FORGETTING_END = "<!-- emtbench:forgetting:end -->"


def model_card(record: dict[str, Any]) -> str:
    """A Hub model card that states exactly what was run; forgetting results are filled in later."""
    method = record.get("method", "unknown")
    base = record.get("base_model", "unknown")
    settings = json.dumps(record.get("settings", {}), indent=2, sort_keys=True, default=str)
    data = record.get("data")
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- emtbench",
        f"- {method}",
        *(["base_model: " + str(base)] if base and "/" in str(base) and not Path(str(base)).exists() else []),
        "---",
        "",
        f"# {method} checkpoint of `{base}`",
        "",
        f"Produced by `emtbench` with method **{method}**. The full record, including package",
        f"versions and parameter counts, is in `{RUN_FILE}`.",
        "",
        "## Settings",
        "",
        "```json",
        settings,
        "```",
        "",
    ]
    if data:
        lines += ["## Data", "", f"`{json.dumps(data, default=str)}`", ""]
    if "parameters" in record:
        params = record["parameters"]
        lines += ["## Parameters", ""]
        lines += [f"- {key}: {value}" for key, value in sorted(params.items())]
        lines.append("")
    lines += [
        "## Forgetting results",
        "",
        FORGETTING_START,
        "Not evaluated yet. Run `emtbench eval` on this folder and build a leaderboard to fill this in.",
        FORGETTING_END,
        "",
    ]
    return "\n".join(lines)
