"""The package layout: layers import downward only, and the flagship registers without an import cycle.

The layers, bottom to top, are described in docs/design.md ("Layout"). A module may import from its
own layer or a lower one; every import counts, including those inside functions (they run too).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "emtbench"

LAYERS: dict[str, int] = {
    "core": 0,
    "datasets": 1,
    "metrics": 1,
    "hub": 2,
    "models": 3,
    "judges": 4,
    "tasks": 5,
    "methods": 6,
    "leaderboard": 7,
    "demo": 8,
    "integrations": 9,
    "cli": 10,
    "testing": 11,
    "emtbench": 12,
}
"""Top-level folder of ``emtbench`` -> its layer; ``emtbench`` itself (the lazy public API) is the top."""

FLAGSHIP_MODEL_FILES = (
    "configuration_emt_flagship",
    "modeling_emt_flagship",
    "processing_emt_flagship",
    "efficientnet_lite",
    "grouped_attention",
)


def layer_name(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "emtbench"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every ``emtbench`` import in a file, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, target) for line, target in found if target.split(".")[0] == "emtbench"]


def upward_imports() -> list[tuple[str, int, str, str, str]]:
    """(file, line, imported module, its layer, the importing layer) for each import that runs up."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source_layer = layer_name(module_name(path))
        for line, target in imported_modules(path):
            target_layer = layer_name(target)
            if LAYERS[target_layer] > LAYERS[source_layer]:
                rel = path.relative_to(PACKAGE.parent).as_posix()
                found.append((rel, line, target, target_layer, source_layer))
    return found


def test_every_top_level_folder_has_a_layer():
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").is_file()}
    modules = {path.stem for path in PACKAGE.glob("*.py") if path.name != "__init__.py"}
    assert not modules, (
        f"modules directly under emtbench/ have no layer: {sorted(modules)}; put them in a folder"
    )
    assert folders <= set(LAYERS), (
        f"folders with no layer in tests/test_layout.py: {sorted(folders - set(LAYERS))}"
    )


def test_layers_import_downward_only():
    violations = upward_imports()
    message = "\n".join(
        f"{file}:{line}: layer {source} imports {target} from the higher layer {layer}"
        for file, line, target, layer, source in violations
    )
    assert not violations, "imports that run up the layers (see docs/design.md, Layout):\n" + message


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a core module importing a command is reported with file, line and both layers."""
    fake = tmp_path / "emtbench"
    (fake / "core").mkdir(parents=True)
    (fake / "cli").mkdir()
    for folder in (fake, fake / "core", fake / "cli"):
        (folder / "__init__.py").write_text("")
    (fake / "core" / "bad.py").write_text(
        "def f():\n    from emtbench.cli import main\n    from ..cli import x\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert upward_imports() == [
        ("emtbench/core/bad.py", 2, "emtbench.cli", "cli", "core"),
        ("emtbench/core/bad.py", 3, "emtbench.cli", "cli", "core"),
    ]


@pytest.mark.parametrize("name", FLAGSHIP_MODEL_FILES)
def test_flagship_model_files_import_nothing_from_emtbench(name):
    """They are copied into checkpoints as Hub remote code: only torch, transformers, stdlib, each other."""
    path = PACKAGE / "models" / "flagship" / f"{name}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    absolute = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("emtbench")
    ] + [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("emtbench")
    ]
    relative = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    assert not absolute, f"{path.name} imports {absolute}"
    assert set(relative) <= set(FLAGSHIP_MODEL_FILES), f"{path.name} imports {relative} relatively"


@pytest.mark.parametrize(
    "name",
    # Each case starts a fresh interpreter that imports torch and transformers (~5 s): the first file
    # of the chain runs in the fast tier, the others in the slow one.
    [
        FLAGSHIP_MODEL_FILES[0],
        *(pytest.param(name, marks=pytest.mark.slow) for name in FLAGSHIP_MODEL_FILES[1:]),
    ],
)
def test_importing_a_flagship_module_first_registers_it_without_a_warning(name):
    """A fresh interpreter whose first import is one flagship module: no warning, and the Auto classes know it."""
    code = (
        "import importlib, warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        f"    importlib.import_module('emtbench.models.flagship.{name}')\n"
        "    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor\n"
        "    config = AutoConfig.for_model('emt_flagship')\n"
        "    assert type(config).__name__ == 'EmtFlagshipConfig', type(config)\n"
        "    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING\n"
        "    assert MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)].__name__ == "
        "'EmtFlagshipForConditionalGeneration'\n"
        "mine = [str(w.message) for w in caught if 'emtbench' in str(w.message) or 'emtbench' in w.filename]\n"
        "assert not mine, mine\n"
        "print('registered')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "registered" in result.stdout, result.stderr[-3000:]
    assert "could not register" not in result.stderr, result.stderr[-3000:]


COMMANDS = (
    "eval", "tasks-dir", "build-base", "judge-agreement", "convert", "extract-llm", "leaderboard",
    "tailor", "merge", "finetune", "continual", "demo", "vlm-eval", "card", "push", "submit",
)  # fmt: skip


def test_every_command_is_checked_here():
    from emtbench.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == set(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_no_torch(command):
    """`emtbench --help` and `emtbench CMD --help` in a fresh interpreter: no torch, no transformers."""
    argv = ["--help"] if command is None else [command, "--help"]
    code = (
        "import sys\n"
        "from emtbench.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = run_fresh(code)
    assert "usage:" in result.stdout


def test_import_emtbench_is_cheap_and_exports_the_api():
    code = (
        "import sys, emtbench\n"
        "assert 'torch' not in sys.modules and 'lm_eval' not in sys.modules\n"
        "missing = [name for name in emtbench.__all__ if not hasattr(emtbench, name)]\n"
        "assert not missing, missing\n"
        "for name in ('evaluate', 'finetune', 'continual', 'merge', 'tailor', 'build_base', 'build_leaderboard'):\n"
        "    function = getattr(emtbench, name)\n"
        "    assert callable(function) and 'Example' in (function.__doc__ or ''), name\n"
    )
    run_fresh(code)


def run_fresh(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter; it must exit 0."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result
