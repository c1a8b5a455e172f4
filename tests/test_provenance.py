"""Results that say how they were made: the judge and emtbench's version in lm-eval's results file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import LM_EVAL_RUN, read_results, run_emtbench

from emtbench.core.version import __version__
from emtbench.judges.base import TASK_METRICS, JudgeRecord, make_judge, prompt_hash
from emtbench.judges.llm import JUDGE_PROMPT
from emtbench.tasks import TASKS_DIR
from emtbench.tasks.provenance import PROVENANCE_KEY, run_provenance

PAPER_PROMPT_HASH = prompt_hash(JUDGE_PROMPT)


def test_every_judge_records_name_model_and_prompt_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-secret")
    local = tmp_path / "judge-lm"
    local.mkdir()
    records = {
        "rule": make_judge({}).record(),
        "llm": make_judge(
            {
                "judge": "llm",
                "judge_model": "gpt-4o-mini",
                "judge_api_key_env": "JUDGE_KEY",
                "judge_base_url": "https://user:pw@proxy.example/v1",
            }
        ).record(),
        "local_llm": make_judge({"judge": "local_llm", "judge_model": str(local)}).record(),
        "embedding": make_judge({"judge": "embedding", "judge_embedding_model": str(local)}).record(),
        "cascade": make_judge(
            {"judge": "cascade", "judge_fallback": "local_llm", "judge_model": str(local)}
        ).record(),
    }
    assert records["rule"] == JudgeRecord("rule", None, None, "rule")
    assert records["llm"].model == "gpt-4o-mini"
    assert records["llm"].prompt_hash == PAPER_PROMPT_HASH == prompt_hash(JUDGE_PROMPT)
    assert len(PAPER_PROMPT_HASH) == 12 and int(PAPER_PROMPT_HASH, 16) >= 0
    assert (records["local_llm"].model, records["local_llm"].prompt_hash) == (str(local), PAPER_PROMPT_HASH)
    assert (records["embedding"].model, records["embedding"].prompt_hash) == (str(local), None)
    assert records["cascade"].name == "cascade"
    assert (records["cascade"].model, records["cascade"].prompt_hash) == (str(local), PAPER_PROMPT_HASH)
    text = json.dumps({name: record.to_dict() for name, record in records.items()})
    assert "sk-secret" not in text and "pw@" not in text  # what goes into a results file is public
    for record in records.values():
        assert JudgeRecord.from_dict(record.to_dict()) == record


def test_a_changed_prompt_changes_the_recorded_hash():
    assert prompt_hash(JUDGE_PROMPT) != prompt_hash(JUDGE_PROMPT.replace("yes or no", "yes/no"))


def _task_config(name: str, **metadata) -> dict:
    """An EMT task's config as lm-eval's TaskFactory hands it to the task class (run metadata merged)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(TASKS_DIR / "emt" / f"{name}.yaml", resolve_func=True)
    config["metadata"] = {**config.get("metadata", {}), **metadata}
    return config


def test_the_task_class_records_the_judge_it_was_built_with(tmp_path):
    local = tmp_path / "judge-lm"
    local.mkdir()
    config = _task_config("emt_digits", judge="local_llm", judge_model=str(local), split="test")
    assert "class" in config  # the YAML names the class; lm-eval builds the task through it
    task = config["class"](config=config)
    recorded = task.dump_config()["metadata"][PROVENANCE_KEY]
    assert recorded["version"] == __version__
    assert recorded["judge"] == {
        "name": "local_llm",
        "model": str(local),
        "prompt_hash": PAPER_PROMPT_HASH,
        "identity": f"local_llm|{local.resolve()}|prompt={PAPER_PROMPT_HASH}|greedy|8",
    }
    # A second run of the task with another judge records that one (the judge is per run, not cached).
    again = config["class"](config=_task_config("emt_digits", split="test"))
    assert again.dump_config()["metadata"][PROVENANCE_KEY]["judge"]["name"] == "rule"


def test_a_config_read_back_from_a_results_file_builds_again(tmp_path):
    """lm-eval may rebuild a task from a dumped config: the recorded provenance is not a data option."""
    config = _task_config("emt_digits", split="test")
    dumped = config["class"](config=config).dump_config()
    config["metadata"] = dumped["metadata"]
    assert PROVENANCE_KEY in config["metadata"]
    assert config["class"](config=config).dump_config()["metadata"][PROVENANCE_KEY]["judge"]["name"] == "rule"


def test_the_checked_in_run_records_its_judge_and_version():
    results = read_results(LM_EVAL_RUN)
    found = run_provenance(results)
    assert set(found) == {"emt_digits", "emt_fashion_mnist"}
    for record in found.values():
        assert record["judge"]["name"] == "rule" and record["judge"]["identity"] == "rule"
        assert record["version"]


def test_run_provenance_skips_tasks_without_a_record():
    results = {"configs": {"arc_easy": {"metadata": {"version": 1.0}}, "x": "not a dict"}}
    assert run_provenance(results) == {}


@pytest.mark.parametrize("group", ["_emt.yaml", "_emt_offline.yaml"])
def test_groups_aggregate_every_task_metric(group):
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(TASKS_DIR) / "emt" / group, resolve_func=False)
    listed = [entry["metric"] for entry in config["aggregate_metric_list"]]
    assert sorted(listed) == sorted(TASK_METRICS)
    template = load_yaml(Path(TASKS_DIR) / "emt" / "_emt_template_yaml", resolve_func=False)
    assert sorted(entry["metric"] for entry in template["metric_list"]) == sorted(TASK_METRICS)
    for entry in config["aggregate_metric_list"]:
        assert entry["aggregation"] == "mean" and entry["weight_by_size"] is False


@pytest.mark.slow
def test_a_group_run_reports_failure_rates_and_the_judge(tiny_llava_dir, tmp_path):
    out = tmp_path / "out"
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
        "--device", "cpu", "--tasks", "emt_offline", "--limit", "3", "--batch_size", "3",
        "--apply_chat_template", "--output_path", str(out),
    )  # fmt: skip
    assert code == 0
    results = read_results(out)
    group = results["groups"]["emt_offline"]
    for metric in TASK_METRICS:
        per_task = [
            results["results"][task][f"{metric},none"] for task in ("emt_digits", "emt_fashion_mnist")
        ]
        assert group[f"{metric},none"] == pytest.approx(sum(per_task) / 2), metric
    rates = [group[f"{m},none"] for m in TASK_METRICS if m not in ("acc", "judge_coverage")]
    assert sum(rates) + group["acc,none"] == pytest.approx(1.0)  # every answer is exactly one verdict
    assert set(run_provenance(results)) == {"emt_digits", "emt_fashion_mnist"}
