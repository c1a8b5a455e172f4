"""The vlm-evaluation integration without vlm-evaluation: index files, scoring, results, runner, CLI.

vlm-evaluation itself is not installable from a registry, so these tests cover everything of
``emtbench.integrations.vlm_eval`` that does not import it: the index files (same images, labels and
order as the lm-eval task's documents), the judging (same verdicts as the task's filter +
``process_results``), the lm-eval-shaped results (read by the leaderboard), the merge, the task runner
and scorer driving the ``emtbench-hf`` model (same answers as ``emtbench eval``), and the command line.
Running vlm-evaluation's own scripts is checked by hand against its source (docs/vlm-eval.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_emtbench
from PIL import Image

from emtbench.core.errors import EmtbenchError
from emtbench.integrations.vlm_eval.index import build_index, check_index, read_index
from emtbench.integrations.vlm_eval.scoring import (
    collect_results,
    find_model_results,
    judge_generations,
    write_lm_eval_results,
)
from emtbench.integrations.vlm_eval.variants import (
    FAMILIES,
    generation_settings,
    make_variant,
    standard_variants,
)
from emtbench.judges.base import METRIC_NAMES

ANSWERS = [
    "The number is 3.",  # one label
    "7",
    "0, 1, 2, 3, 4, 5, 6, 7, 8, 9",  # the list echoed back: intrinsic
    "a picture of a fish in a tank",  # extrinsic
    "",
    "The airplane is 8.",
    "It is not 2, it is 5.",
    "three",
]


def test_every_probe_has_a_test_and_a_paper_subset():
    assert set(FAMILIES) == {
        "emt-mnist", "emt-cifar10", "emt-cifar100", "emt-miniimagenet", "emt-digits", "emt-fashion-mnist",
        "emt-animal-mnist",
    }  # fmt: skip
    test, paper = standard_variants(FAMILIES["emt-cifar10"])
    assert (test.dataset_id, test.metadata()) == ("emt-cifar10-test", {"split": "test"})
    assert paper.dataset_id == "emt-cifar10-train-20pct-seed0"
    assert paper.metadata() == {"split": "train", "fraction": 0.2, "seed": 0}
    assert str(paper.index_file) == "datasets/emt-cifar10/emt-cifar10-train-20pct-seed0/metadata.json"
    other = make_variant(
        "emt-fashion-mnist", split="train", fraction=0.015, seed=3, judge={"judge": "embedding"}
    )
    assert other.dataset_id == "emt-fashion-mnist-train-1p5pct-seed3"
    assert other.metadata() == {"split": "train", "fraction": 0.015, "seed": 3, "judge": "embedding"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction": 1.5}, "fraction must be a number in (0, 1]"),
        ({"source": "ftp"}, "source must be one of"),
        ({"judge": {"judge": "oracle"}}, "unknown judge 'oracle'"),
        ({"judge": {"judge_nonsense": 1}}, "unknown metadata key(s) 'judge_nonsense'"),
        ({"judge": {"split": "train"}}, "select data, not the judge"),
    ],
)
def test_bad_subsets_and_judges_fail_as_metadata_does(kwargs, message):
    with pytest.raises(EmtbenchError, match=None) as raised:
        make_variant("digits", **kwargs)
    assert message in str(raised.value)


def test_decoding_budget_is_each_task_yaml_as_lm_eval_reads_it():
    from lm_eval.tasks._yaml_loader import load_yaml  # what lm-eval's TaskManager reads task files with

    from emtbench.tasks import TASKS_DIR

    for dataset in FAMILIES.values():
        config = load_yaml(Path(TASKS_DIR) / "emt" / f"{dataset.task}.yaml", resolve_func=False)
        assert generation_settings() == config["generation_kwargs"], dataset.task
    assert generation_settings()["max_gen_toks"] == 64 and generation_settings()["do_sample"] is False


@pytest.mark.parametrize(("split", "fraction"), [("test", None), ("train", 0.2)])
def test_index_holds_the_lm_eval_documents_in_order(tmp_path, split, fraction):
    from emtbench.tasks.runtime import load_task_dataset

    variant = make_variant("digits", split=split, fraction=fraction, seed=0, source="offline")
    build_index(variant, tmp_path)
    header, examples = read_index(tmp_path, variant.index_file)
    metadata = {"source": "offline", "split": split, **({"fraction": fraction} if fraction else {})}
    docs = load_task_dataset("digits", **metadata)["eval"]
    assert header["task"] == "emt_digits" and header["prompt"] == variant.dataset.prompt
    assert [e["example_id"] for e in examples] == list(range(len(docs)))
    assert [e["label"] for e in examples] == docs["label"]
    for example, doc in zip(examples[:40], docs.select(range(40)), strict=False):
        with Image.open(tmp_path / example["img_path"]) as image:
            assert image.mode == doc["image"].mode
            assert np.array_equal(np.asarray(image), np.asarray(doc["image"]))
    assert build_index(variant, tmp_path) == tmp_path / variant.index_file  # reused, not rebuilt


def test_an_index_of_other_data_is_refused(tmp_path):
    offline = make_variant("digits", source="offline")
    build_index(offline, tmp_path)
    folder = tmp_path / "copy"
    for label in ("0", "1"):
        (folder / label).mkdir(parents=True)
        Image.new("L", (8, 8), int(label) * 200).save(folder / label / "a.png")
    with pytest.raises(EmtbenchError, match="built with other data"):
        check_index(make_variant("digits", data_dir=folder), tmp_path)
    assert not list(tmp_path.glob("datasets/emt-digits/.*partial*"))


def _lm_eval_metrics(task: str, labels: list[int], answers: list[str], metadata: dict) -> list[dict]:
    """What the lm-eval task computes: its filter judges the batch, process_results looks verdicts up."""
    from emtbench.tasks import runtime

    runtime._JUDGES[task] = runtime.make_judge(metadata)
    docs = [{"emt_task": task, "label": label} for label in labels]
    runtime.judge_responses([[a] for a in answers], docs)
    return [runtime.process_results(doc, [answer]) for doc, answer in zip(docs, answers, strict=True)]


def test_verdicts_equal_the_lm_eval_tasks():
    labels = [3, 7, 3, 1, 0, 8, 5, 3]
    examples = [{"example_id": i, "label": label} for i, label in enumerate(labels)]
    scored = judge_generations("emt_digits", examples, ANSWERS, judge={})
    expected = _lm_eval_metrics("emt_digits", labels, ANSWERS, {})
    assert [s.metrics for s in scored] == expected
    verdicts = [s.judgement.verdict.value for s in scored]
    assert verdicts[:5] == [
        "correct",
        "correct",
        "intrinsic_hallucination",
        "extrinsic_hallucination",
        "empty",
    ]
    assert len(set(verdicts)) >= 4


def test_results_read_by_the_leaderboard_like_lm_evals(tmp_path):
    from emtbench.leaderboard.build import load_leaderboard
    from emtbench.leaderboard.results import read_results
    from emtbench.metrics.bootstrap import read_sample_scores

    labels = [3, 7, 3, 1, 0, 8, 5, 3]
    examples = [{"example_id": i, "label": label} for i, label in enumerate(labels)]
    scored = judge_generations("emt_digits", examples, ANSWERS, judge={})
    path = write_lm_eval_results(
        tmp_path / "run", "emt_digits", scored, model="vlm-evaluation:m", metadata={}
    )
    run = read_results(tmp_path / "run", {})
    accuracy = 100 * np.mean([s.metrics["acc"] for s in scored])
    assert run.accuracy == {"emt_digits": pytest.approx(accuracy)} and run.metric["emt_digits"] == "acc,none"
    values = json.loads(path.read_text())["results"]["emt_digits"]
    assert sum(values[f"{name},none"] for name in METRIC_NAMES) == pytest.approx(1.0)
    assert values["acc_stderr,none"] == pytest.approx(
        np.std([s.metrics["acc"] for s in scored], ddof=1) / np.sqrt(8)
    )
    scores = read_sample_scores(run.samples["emt_digits"])
    assert scores.tolist() == [s.metrics["acc"] for s in scored]
    manifest = tmp_path / "leaderboard.yaml"
    manifest.write_text("runs:\n  - name: via-vlm-eval\n    results: run/\n")
    board = load_leaderboard(manifest, progress=False)
    assert not board.problems
    assert board.rows[0].accuracy["emt_digits"] == pytest.approx(accuracy)
    assert "emt_digits" in board.rows[0].ci


def _scored_folder(root: Path, dataset_id: str, task: str, model: str) -> Path:
    examples = [{"example_id": i, "label": i % 10} for i in range(4)]
    scored = judge_generations(task, examples, ["1", "1", "two", ""], judge={})
    folder = root / f"emt-{dataset_id.split('-')[1]}" / dataset_id / model
    return write_lm_eval_results(folder, task, scored, model=model, metadata={})


def test_collect_joins_one_models_datasets(tmp_path):
    from emtbench.leaderboard.results import read_results

    _scored_folder(tmp_path / "results", "emt-digits-test", "emt_digits", "m")
    _scored_folder(tmp_path / "results", "emt-mnist-test", "emt_mnist", "m")
    _scored_folder(tmp_path / "results", "emt-mnist-test", "emt_mnist", "other-model")
    files = find_model_results(tmp_path / "results", "m")
    assert len(files) == 2
    collect_results(files, tmp_path / "out")
    run = read_results(tmp_path / "out", {})
    assert set(run.accuracy) == {"emt_digits", "emt_mnist"} and set(run.samples) == {
        "emt_digits",
        "emt_mnist",
    }
    _scored_folder(tmp_path / "results", "emt-digits-train-20pct-seed0", "emt_digits", "m")
    with pytest.raises(EmtbenchError, match="emt_digits appears in both"):
        collect_results(find_model_results(tmp_path / "results", "m"), tmp_path / "out2")
    assert run_emtbench(
        "vlm-eval", "collect", str(tmp_path / "results"), "--model_id", "m",
        "--datasets", "emt-digits-test,emt-mnist-test", "--output", str(tmp_path / "out3"),
    ) == 0  # fmt: skip
    assert set(read_results(tmp_path / "out3", {}).accuracy) == {"emt_digits", "emt_mnist"}


def test_cli_imports_nothing_heavy_and_explains_a_missing_vlm_eval(tmp_path):
    # This command adds nothing heavy to what `import emtbench` itself costs (the layering test's business).
    names = "('torch', 'transformers', 'lm_eval', 'vlm_eval', 'draccus', 'datasets')"
    baseline = subprocess.run(
        [sys.executable, "-c", f"import sys, emtbench\nprint('HEAVY', sorted(m for m in {names} if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    for argv in (["vlm-eval", "--help"], ["vlm-eval", "run", "--help"], ["vlm-eval", "collect", "--help"]):
        code = (
            "import argparse, sys\n"
            "from emtbench.cli import vlm_eval as cli\n"
            "parser = argparse.ArgumentParser(prog='emtbench')\n"
            "cli.register(parser.add_subparsers())\n"
            "try:\n"
            f"    args, extra = parser.parse_known_args({argv!r})\n"
            "    args.handler(args, extra)\n"
            "except SystemExit:\n"
            "    pass\n"
            f"print('HEAVY', sorted(m for m in {names} if m in sys.modules))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == baseline, (argv, out)
        assert "vlm-evaluation" in out, (argv, out)
    assert run_emtbench("vlm-eval", "datasets") == 0
    script = tmp_path / "evaluate.py"
    script.write_text("raise SystemExit('must not run')\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emtbench.cli",
            "vlm-eval",
            "run",
            str(script),
            "--dataset.type",
            "emt-digits-test",
        ],
        capture_output=True,
        text=True,
    )
    try:
        import vlm_eval  # noqa: F401
    except ImportError:
        assert result.returncode == 2
        assert (
            "vlm_eval package) is not installed" in result.stderr and "pip install --no-deps" in result.stderr
        )


@pytest.mark.slow
def test_runner_and_scorer_give_emtbench_evals_answers_and_verdicts(
    tiny_llava_dir, tiny_eval_results, tmp_path
):
    """The task runner + scorer with the ``emtbench-hf`` model, on the documents the session's
    `emtbench eval` run (digits, --limit 6, batch 3, chat template) saw: same answers, same verdicts."""
    from emtbench.integrations.vlm_eval.harness import ACTIVE_VARIANTS, EMTScorer, EMTTaskRunner
    from emtbench.integrations.vlm_eval.models import TransformersVLM

    variant = make_variant("digits")
    ACTIVE_VARIANTS[variant.dataset_id] = variant
    index = build_index(variant, tmp_path / "root")
    document = json.loads(index.read_text())
    document["examples"] = {key: value for key, value in document["examples"].items() if int(key) < 6}
    index.write_text(json.dumps(document))  # the first 6 documents, as lm-eval's --limit 6 takes them
    vlm = TransformersVLM("emtbench-hf", "tiny", tiny_llava_dir, load_precision="bf16", max_length=128)
    results_dir = tmp_path / "results" / variant.family / variant.dataset_id / "tiny"
    runner = EMTTaskRunner(
        tmp_path / "root",
        variant.index_file,
        results_dir,
        "tiny",
        vlm.get_prompt_fn(variant.family),
        vlm.image_processor,
    )
    runner.evaluate(vlm, device_batch_size=3, num_workers=0)
    full_results = json.loads((results_dir / "results+rank-0.json").read_text())
    summary = EMTScorer(
        variant.dataset_id, results_dir, full_results, tmp_path / "root" / variant.index_file
    ).score("tiny")

    def samples(folder: Path) -> dict[int, dict]:
        (path,) = sorted(folder.rglob("samples_emt_digits_*.jsonl"))
        return {r["doc_id"]: r for r in map(json.loads, path.read_text().splitlines())}

    ours, theirs = samples(results_dir), samples(tiny_eval_results)
    assert sorted(ours) == sorted(theirs) == list(range(6))
    for doc_id in range(6):
        assert (
            ours[doc_id]["arguments"]["gen_args_0"]["arg_0"]
            == theirs[doc_id]["arguments"]["gen_args_0"]["arg_0"]
        )
        assert ours[doc_id]["filtered_resps"] == theirs[doc_id]["filtered_resps"]
        assert {m: ours[doc_id][m] for m in METRIC_NAMES} == {m: theirs[doc_id][m] for m in METRIC_NAMES}
    assert summary["accuracy"] == pytest.approx(np.mean([theirs[i]["acc"] for i in range(6)]))
    assert all("verdict" in entry for entry in full_results.values())  # score.py stores these in metrics.json
