"""Language suite: lm-eval's built-in NLU/NLG tasks grouped as emt_linguistic, run on local copies.

The test points each built-in task at small local files through an overriding task YAML (same task
name, ``include:`` of lm-eval's own YAML, ``dataset_path: json``), exactly as a user without Hub
access would, then runs the group through the MLLM (hf-multimodal) and through the extracted LLM
(hf): same tasks, same results.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import read_results, run_emtbench

BUILTIN_TASKS = ("arc_easy", "arc_challenge", "winogrande", "wsc273", "lambada_openai")

ARC = [
    {"id": "a1", "question": "Which is a mammal?", "choices": {"text": ["dog", "fish", "ant"], "label": ["A", "B", "C"]}, "answerKey": "A"},
    {"id": "a2", "question": "What do plants need?", "choices": {"text": ["light", "sand", "glass", "iron"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
    {"id": "a3", "question": "What melts ice?", "choices": {"text": ["cold", "heat"], "label": ["1", "2"]}, "answerKey": "2"},
]  # fmt: skip
WINOGRANDE = [
    {"sentence": "The cat sat on the mat because _ was tired.", "option1": "the cat", "option2": "the mat", "answer": "1"},
    {"sentence": "The bird flew over the dog because _ had wings.", "option1": "the bird", "option2": "the dog", "answer": "1"},
]  # fmt: skip
WSC = [
    {"text": "The dog chased the cat because it was fast.", "pronoun": "it", "pronoun_loc": 31, "quote": "it was fast",
     "quote_loc": 31, "options": ["The dog", "the cat"], "label": 0, "source": "test"},
    {"text": "The man lifted the boy because he was strong.", "pronoun": "he", "pronoun_loc": 31, "quote": "he was strong",
     "quote_loc": 31, "options": ["The man", "the boy"], "label": 0, "source": "test"},
]  # fmt: skip
LAMBADA = [
    {"text": "the quick brown fox jumps over the lazy dog"},
    {"text": "what is the number in the image seven"},
    {"text": "a picture of a fish in a tank"},
]


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _builtin_yaml(task: str) -> Path:
    import lm_eval.tasks

    found = [p for p in Path(lm_eval.tasks.__file__).parent.rglob("*.yaml") if yaml_task_name(p) == task]
    assert len(found) == 1, found
    return found[0]


def yaml_task_name(path: Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith("task:"):
            return line.split(":", 1)[1].strip()
    return None


@pytest.fixture(scope="module")
def local_language_tasks(tmp_path_factory) -> Path:
    """Overriding task YAMLs (one per built-in task) that read generated local JSONL files."""
    root = tmp_path_factory.mktemp("language-tasks")
    data = {
        "arc_easy": ("test", ARC),
        "arc_challenge": ("test", ARC[::-1]),
        "winogrande": ("validation", WINOGRANDE),
        "wsc273": ("test", WSC),
        "lambada_openai": ("test", LAMBADA),
    }
    for task, (split, rows) in data.items():
        config = {
            "include": str(_builtin_yaml(task)),
            "task": task,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {split: _write_jsonl(root / f"{task}.jsonl", rows)}},
            "training_split": None,
            "validation_split": split if split == "validation" else None,
            "test_split": split if split == "test" else None,
        }
        (root / f"{task}_local.yaml").write_text(yaml.safe_dump(config))
    return root


def _run_suite(model: str, pretrained: Path, tasks_dir: Path, out: Path) -> dict:
    """`emtbench eval --tasks emt_linguistic` on the local copies; the results JSON's `results`."""
    code = run_emtbench(
        "eval", "--model", model, "--model_args", f"pretrained={pretrained}", "--device", "cpu",
        "--include_path", str(tasks_dir), "--tasks", "emt_linguistic", "--batch_size", "4",
        "--output_path", str(out),
    )  # fmt: skip
    assert code == 0
    return read_results(out)["results"]


@pytest.fixture(scope="module")
def mllm_output(tiny_llava_dir: Path, local_language_tasks: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lang-mllm")
    _run_suite("hf-multimodal", tiny_llava_dir, local_language_tasks, out)
    return out


@pytest.fixture(scope="module")
def mllm_results(mllm_output: Path) -> dict:
    return read_results(mllm_output)["results"]


@pytest.mark.slow
def test_group_runs_every_builtin_task_through_the_mllm(mllm_results: dict) -> None:
    for task in BUILTIN_TASKS:
        assert 0.0 <= mllm_results[task]["acc,none"] <= 1.0, task
    assert mllm_results["lambada_openai"]["perplexity,none"] > 1.0
    assert "acc_norm,none" in mllm_results["arc_easy"]
    nlu = [mllm_results[t]["acc,none"] for t in ("arc_easy", "arc_challenge", "winogrande", "wsc273")]
    assert mllm_results["emt_linguistic_nlu"]["acc,none"] == pytest.approx(sum(nlu) / 4)
    assert mllm_results["emt_linguistic_nlg"]["acc,none"] == pytest.approx(
        mllm_results["lambada_openai"]["acc,none"]
    )
    assert "emt_linguistic" in mllm_results


@pytest.mark.slow
def test_leaderboard_reads_the_nlu_and_nlg_tasks(mllm_output: Path, mllm_results: dict) -> None:
    from emtbench.leaderboard.manifest import default_groups
    from emtbench.leaderboard.results import read_results as leaderboard_results

    board = leaderboard_results(mllm_output, {})
    groups = default_groups()
    for task in groups["NLU"] + groups["NLG"]:
        assert board.accuracy[task] == pytest.approx(100 * mllm_results[task]["acc,none"]), task


@pytest.mark.slow
def test_extracted_llm_gives_the_same_results(
    mllm_results: dict, tiny_extracted_llm_dir: Path, local_language_tasks: Path, tmp_path: Path
) -> None:
    llm_results = _run_suite("hf", tiny_extracted_llm_dir, local_language_tasks, tmp_path / "lang-llm")
    for task in BUILTIN_TASKS:
        for metric in ("acc,none", "acc_norm,none", "perplexity,none"):
            if metric in mllm_results[task]:
                assert llm_results[task][metric] == pytest.approx(mllm_results[task][metric], rel=1e-5), (
                    task,
                    metric,
                )


def test_group_yamls_reference_the_builtin_tasks() -> None:
    from emtbench.tasks import TASKS_DIR

    folder = TASKS_DIR / "linguistic"
    nlu = yaml.safe_load((folder / "_emt_linguistic_nlu.yaml").read_text())
    nlg = yaml.safe_load((folder / "_emt_linguistic_nlg.yaml").read_text())
    top = yaml.safe_load((folder / "_emt_linguistic.yaml").read_text())
    assert nlu["task"] == ["arc_easy", "arc_challenge", "winogrande", "wsc273"]
    assert nlg["task"] == ["lambada_openai"]
    assert top["task"] == ["emt_linguistic_nlu", "emt_linguistic_nlg"]
