"""lm-eval habits: --config keeps its include_path, task typos get close names, missing chat templates warn."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import read_results, run_emtbench

from emtbench.core.errors import EmtbenchError
from emtbench.tasks import TASKS_DIR
from emtbench.tasks.evaluation import (
    chat_template_warning,
    has_chat_template,
    unknown_tasks_error,
)


def _my_task_folder(root: Path) -> Path:
    """A user's own task folder: ``mydigits``, the EMT digits probe under another name."""
    folder = root / "my-tasks"
    folder.mkdir()
    (folder / "mydigits.yaml").write_text(
        f"include: {TASKS_DIR / 'emt' / 'emt_digits.yaml'}\ntask: mydigits\n"
    )
    return folder


def _config(root: Path, **values) -> Path:
    path = root / "cfg.yaml"
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def executed(monkeypatch, capsys):
    """Replace lm-eval's run by a recorder: what it would run with, and what was printed before it."""
    from lm_eval._cli import HarnessCLI

    seen: dict = {}

    def record(self, parsed):
        seen["parsed"] = parsed
        seen["stderr_before_run"] = capsys.readouterr().err

    monkeypatch.setattr(HarnessCLI, "execute", record)
    return seen


def test_config_include_path_is_kept_beside_emtbench_tasks(tmp_path, executed):
    folder = _my_task_folder(tmp_path)
    config = _config(tmp_path, tasks="mydigits", include_path=str(folder), model="hf-multimodal")
    assert run_emtbench("eval", "--config", str(config)) == 0
    assert executed["parsed"].include_path == [str(folder), str(TASKS_DIR)]


def test_command_line_and_config_include_paths_are_both_kept(tmp_path, executed):
    folder = _my_task_folder(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    config = _config(tmp_path, tasks="mydigits", include_path=[str(folder)])
    assert run_emtbench("eval", "--config", str(config), "--include_path", str(other)) == 0
    assert executed["parsed"].include_path == [str(other), str(folder), str(TASKS_DIR)]


def test_no_include_path_is_emtbench_tasks_alone(executed):
    assert run_emtbench("eval", "--model", "hf", "--tasks", "emt_digits") == 0
    assert executed["parsed"].include_path == [str(TASKS_DIR)]


def test_a_bad_config_file_is_a_named_error(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("- a list, not a mapping\n")
    assert run_emtbench("eval", "--config", str(config)) == 2
    assert "YAML root must be a mapping" in capsys.readouterr().err


def test_close_task_names_are_suggested():
    manager = SimpleNamespace(all_tasks=["emt_digits", "emt_fashion_mnist", "emt_mnist", "arc_easy", "emt"])
    error = unknown_tasks_error(["emt_digts", "zzzz"], manager)
    assert isinstance(error, EmtbenchError)
    text = str(error)
    assert "unknown task(s) emt_digts, zzzz" in text
    assert "'emt_digts': did you mean emt_digits" in text
    assert "'zzzz': did you mean" not in text  # nothing close: no made-up suggestion
    assert "--include_path" in text


def _model_folder(root: Path, name: str, **files: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llava"}')
    for filename, text in files.items():
        (folder / filename.replace("__", ".")).write_text(text)
    return folder


def test_chat_templates_are_found_in_files_and_configs(tmp_path):
    jinja = _model_folder(tmp_path, "jinja", chat_template__jinja="{{ messages }}")
    in_json = _model_folder(tmp_path, "json", chat_template__json='{"chat_template": "{{ x }}"}')
    in_tokenizer = _model_folder(tmp_path, "tok", tokenizer_config__json='{"chat_template": "{{ x }}"}')
    empty = _model_folder(tmp_path, "empty", tokenizer_config__json='{"chat_template": null}')
    broken = _model_folder(tmp_path, "broken", processor_config__json="{not json")
    assert (
        has_chat_template(str(jinja))
        and has_chat_template(str(in_json))
        and has_chat_template(str(in_tokenizer))
    )
    assert not has_chat_template(str(empty)) and not has_chat_template(str(broken))
    assert not has_chat_template("nobody/not-in-the-cache")  # never a download


def test_the_warning_names_the_flag_and_only_where_it_applies(tmp_path):
    model = _model_folder(tmp_path, "m", chat_template__jinja="{{ messages }}")
    args = {"pretrained": str(model)}
    warning = chat_template_warning("hf-multimodal", args, False)
    assert warning and "--apply_chat_template" in warning and str(model) in warning
    assert chat_template_warning("hf-multimodal", args, True) is None
    assert chat_template_warning("hf-multimodal", args, "chatml") is None  # a named template counts
    assert chat_template_warning("emtbench-clip", args, False) is None
    plain = _model_folder(tmp_path, "plain")
    assert chat_template_warning("hf-multimodal", {"pretrained": str(plain)}, False) is None
    assert chat_template_warning("hf-multimodal", args, False, "emt_stdlib_ppl") is None  # perplexity only
    assert chat_template_warning("hf-multimodal", args, False, ["emt_stdlib_ppl", "emt_digits"])


def test_eval_warns_before_the_run(tiny_llava_dir, executed):
    argv = ["eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}"]
    assert run_emtbench(*argv, "--tasks", "emt_digits") == 0
    assert "has a chat template, but --apply_chat_template is not set" in executed["stderr_before_run"]
    assert run_emtbench(*argv, "--tasks", "emt_digits", "--apply_chat_template") == 0
    assert "chat template" not in executed["stderr_before_run"]


def test_a_config_setting_apply_chat_template_does_not_warn(tiny_llava_dir, tmp_path, executed):
    config = _config(
        tmp_path,
        model="hf-multimodal",
        model_args={"pretrained": str(tiny_llava_dir)},
        tasks="emt_digits",
        apply_chat_template=True,
    )
    assert run_emtbench("eval", "--config", str(config)) == 0
    assert "chat template" not in executed["stderr_before_run"]
    config = _config(
        tmp_path, model="hf-multimodal", model_args=f"pretrained={tiny_llava_dir}", tasks="emt_digits"
    )
    assert run_emtbench("eval", "--config", str(config)) == 0
    assert "has a chat template" in executed["stderr_before_run"]


@pytest.mark.slow
def test_a_config_with_its_own_task_folder_runs(tiny_llava_dir, tmp_path):
    """The issue's reproduction: this failed with "Tasks not found: mydigits"."""
    folder = _my_task_folder(tmp_path)
    out = tmp_path / "out"
    config = _config(
        tmp_path,
        model="hf-multimodal",
        model_args=f"pretrained={tiny_llava_dir}",
        tasks="mydigits",
        include_path=str(folder),
        limit=2,
        device="cpu",
        apply_chat_template=True,
        output_path=str(out),
    )
    assert run_emtbench("eval", "--config", str(config)) == 0
    results = read_results(out)
    assert results["results"]["mydigits"]["acc,none"] >= 0
    assert json.dumps(results["configs"]["mydigits"]["metadata"]["emtbench"]["judge"]["name"]) == '"rule"'


@pytest.mark.slow
def test_a_task_typo_gets_the_closest_names(tiny_llava_dir, capsys):
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
        "--tasks", "emt_digts", "--apply_chat_template",
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown task(s) emt_digts" in err and "did you mean emt_digits" in err
    assert "emtbench eval: error: --tasks: unknown task(s) emt_digts" in err
    assert "ValueError: Tasks not found" not in err  # lm-eval's raw error no longer escapes


@pytest.mark.slow
def test_evaluate_suggests_close_names_too():
    import emtbench

    with pytest.raises(EmtbenchError, match="did you mean emt_fashion_mnist"):
        emtbench.evaluate(tasks=["emt_fashion_mnst"], model="hf-multimodal", model_args={"pretrained": "x"})


def test_the_environment_report_is_made_once_per_process_and_the_original_is_restored(monkeypatch):
    """lm-eval writes torch's collect_env report into each results file; evaluate() makes it once."""
    import torch.utils.collect_env as collect_env

    from emtbench.tasks import evaluation

    calls = []

    def slow_report() -> str:
        calls.append(1)
        return f"report {len(calls)}"

    monkeypatch.setattr(collect_env, "get_pretty_env_info", slow_report)
    monkeypatch.setattr(evaluation, "_ENVIRONMENT_REPORT", [])
    reports = []
    for _ in range(3):
        with evaluation.environment_reported_once():
            from torch.utils.collect_env import get_pretty_env_info  # as lm-eval imports it, per call

            reports.append(get_pretty_env_info())
    assert reports == ["report 1"] * 3 and len(calls) == 1
    assert collect_env.get_pretty_env_info is slow_report  # nothing patched outside the block
    assert slow_report() == "report 2"


def test_emtbench_tasks_alone_are_resolved_without_indexing_lm_evals_own(monkeypatch):
    """lm-eval's ~14,700 task files are indexed only when a requested name needs them."""
    from emtbench.tasks import evaluation

    monkeypatch.setattr(evaluation, "_TASK_MANAGERS", {})
    manager = evaluation.task_manager([str(TASKS_DIR)], {}, ["emt_digits", "emt_stdlib_ppl", "emt_offline"])
    assert "emt_digits" in manager.all_tasks and "arc_easy" not in manager.all_tasks
    assert len(manager.all_tasks) < 200
    index = manager.task_index
    assert evaluation.resolved_within(index, ["emt_digits", "emt_offline"])  # a group of emtbench tasks
    # the language suite's members are lm-eval's own tasks; a typo is not found here either
    assert not evaluation.resolved_within(index, ["emt_linguistic"])
    assert not evaluation.resolved_within(index, ["emt_digitz"])
    assert not evaluation.resolved_within(index, ["emt_digits", "arc_easy"])
