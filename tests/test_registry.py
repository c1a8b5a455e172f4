"""The one Registry type behind datasets, judges, merge methods and architectures."""

from __future__ import annotations

import sys

import pytest

from emtbench.core.errors import EmtbenchError
from emtbench.core.registry import Registry


def test_register_get_aliases_names_and_iteration():
    shapes: Registry[int] = Registry("shape", where="--shape")

    @shapes.register("square", aliases=("box",), summary="four equal sides")
    def square() -> int:
        return 4

    shapes.add("triangle", 3)
    assert shapes.get("square") is square and shapes.get("box") is square
    assert shapes["triangle"] == 3 and "box" in shapes and "circle" not in shapes
    assert shapes.names() == ["square", "triangle"] == list(shapes) and len(shapes) == 2
    assert shapes.entry("box").summary == "four equal sides"
    del shapes["triangle"]
    assert shapes.names() == ["square"]
    with pytest.raises(KeyError):
        shapes["triangle"]


def test_unknown_name_lists_close_matches_and_every_name():
    methods: Registry[str] = Registry("merge method", where="--method")
    for name in ("dare", "ties", "task-arithmetic"):
        methods.add(name, name)
    with pytest.raises(EmtbenchError) as error:
        methods.get("tie")
    assert error.value.problem == "unknown merge method 'tie'"
    assert error.value.where == "--method"
    assert "did you mean 'ties'" in error.value.fix
    assert "use one of: dare, task-arithmetic, ties" in error.value.fix


def test_an_alias_cannot_be_taken_twice():
    things: Registry[int] = Registry("thing")
    things.add("a", 1, aliases=("x",))
    with pytest.raises(ValueError, match="already taken"):
        things.add("b", 2, aliases=("x",))


def test_builtins_are_imported_on_first_lookup_only(tmp_path, monkeypatch):
    package = tmp_path / "fake_builtins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("from fake_registry_home import REG\nREG.add('one', 1)\n")
    (package / "_private.py").write_text("raise RuntimeError('private modules are not imported')\n")
    (tmp_path / "fake_registry_home.py").write_text(
        "from emtbench.core.registry import Registry\nREG = Registry('thing', builtins='fake_builtins')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_registry_home

    try:
        assert "fake_builtins.one" not in sys.modules
        assert fake_registry_home.REG.get("one") == 1
        assert "fake_builtins.one" in sys.modules
    finally:
        for name in ("fake_registry_home", "fake_builtins", "fake_builtins.one"):
            sys.modules.pop(name, None)


def test_the_built_in_registries_use_it():
    from emtbench.datasets.emt import DATASETS
    from emtbench.judges.base import JUDGES
    from emtbench.methods.finetune import FINETUNE_METHODS
    from emtbench.methods.fusion.base import MERGE_METHODS
    from emtbench.models.parts import ARCHITECTURE_PARTS

    for registry in (DATASETS, JUDGES, MERGE_METHODS, ARCHITECTURE_PARTS, FINETUNE_METHODS):
        assert isinstance(registry, Registry)
    assert {"rule", "embedding", "llm", "local_llm", "cascade"} <= set(JUDGES)
    assert {"mnist", "cifar10", "cifar100", "miniimagenet", "fashion_mnist", "digits", "animal_mnist"} == set(
        DATASETS
    )
    assert set(FINETUNE_METHODS) == {"linear", "full", "lora", "soft", "msgm"}
    assert {"task-arithmetic", "dare", "ties", "graft", "model-tailor"} <= set(MERGE_METHODS)
