"""Paired intervals on the leaderboard: forgetting_ci per task, paired group Δ, significance marks."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from conftest import run_emtbench

from emtbench.metrics import delta_ci, paired_delta_ci, read_samples, significant, task_seed
from emtbench.testing.leaderboard import STAMP, write_results

TASK = "emt_digits"


def _build(folder: Path, runs: list[dict], **top) -> dict:
    manifest = folder / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"groups": {"EMT": [TASK]}, "runs": runs, **top}, sort_keys=False))
    assert run_emtbench("leaderboard", "build", str(manifest), "--out", str(folder / "site"), "--quiet") == 0
    return json.loads((folder / "site" / "leaderboard.json").read_text())


def _runs(folder: Path) -> list[dict]:
    """A base (203/300 right) and two fine-tunes on the same 300 documents: one forgets 15 of them."""
    write_results(folder / "base", {TASK: 100 * 203 / 300, "arc_easy": 50.0}, samples=300)
    write_results(folder / "forgets", {TASK: 100 * 188 / 300, "arc_easy": 50.0}, samples=300)
    write_results(folder / "same", {TASK: 100 * 202 / 300, "arc_easy": 50.0}, samples=300)
    return [
        {"name": "base", "results": "base", "method": "zero-shot"},
        {"name": "forgets", "results": "forgets", "method": "lora", "base": "base"},
        {"name": "same", "results": "same", "method": "lora", "base": "base"},
    ]


def _samples(folder: Path, run: str, task: str = TASK) -> Path:
    return folder / run / f"samples_{task}_{STAMP}.jsonl"


def _run(data: dict, name: str) -> dict:
    return next(run for run in data["runs"] if run["name"] == name)


def test_forgetting_ci_is_paired_against_the_base(tmp_path):
    data = _build(tmp_path, _runs(tmp_path))
    forgets = _run(data, "forgets")
    assert forgets["forgetting"][TASK] == pytest.approx(5.0)
    base = read_samples(_samples(tmp_path, "base")).scores
    run = read_samples(_samples(tmp_path, "forgets")).scores
    expected = paired_delta_ci(base, run, seed=task_seed(0, TASK))
    assert forgets["forgetting_ci"][TASK] == pytest.approx(list(expected), abs=1e-4)
    low, high = forgets["forgetting_ci"][TASK]
    assert 1.5 < low < 5.0 < high < 8.5  # the 15 discordant documents of 300: ±2.5 points
    assert forgets["forgetting_significant"][TASK] is True
    independent = delta_ci([base], [run], seed=0)
    assert independent[0] < 0 < independent[1]  # resampled independently, the same Δ is not significant
    # A one-task group's Δ is that task's forgetting: its interval is now the paired one too.
    assert forgets["delta"]["EMT"] == pytest.approx(5.0)
    assert forgets["delta_ci"]["EMT"] == pytest.approx([low, high], abs=1e-4)
    assert forgets["delta_ci_paired"]["EMT"] is True and forgets["delta_significant"]["EMT"] is True
    same = _run(data, "same")
    assert same["forgetting_significant"][TASK] is False and same["delta_significant"]["EMT"] is False
    assert _run(data, "base")["forgetting_ci"][TASK] is None  # no base of its own
    assert forgets["forgetting_ci"]["arc_easy"] == [0.0, 0.0]  # identical answers: nothing to resample
    assert forgets["accuracy_ci"][TASK][0] < 62.67 < forgets["accuracy_ci"][TASK][1]
    assert data["pairing"] == []


def test_documents_are_paired_by_doc_id_not_by_line(tmp_path):
    runs = _runs(tmp_path)
    before = _run(_build(tmp_path, runs), "forgets")
    path = _samples(tmp_path, "forgets")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(reversed(lines)) + "\n")  # same documents, the file in another order
    after = _run(_build(tmp_path, runs), "forgets")
    assert after["forgetting_ci"] == before["forgetting_ci"]
    assert after["delta_ci"] == before["delta_ci"]
    assert after["accuracy_ci"] == before["accuracy_ci"]


def test_documents_scored_on_one_side_only_are_dropped_and_listed(tmp_path):
    runs = _runs(tmp_path)
    path = _samples(tmp_path, "forgets")
    lines = path.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["doc_id"] not in (0, 1)]  # two base-right documents
    path.write_text("\n".join(kept) + "\n")
    results = tmp_path / "forgets" / f"results_{STAMP}.json"
    payload = json.loads(results.read_text())
    payload["results"][TASK]["acc,none"] = 186 / 298
    results.write_text(json.dumps(payload))
    data = _build(tmp_path, runs)
    [note] = data["pairing"]
    assert "forgets" in note["where"] and TASK in note["where"]
    assert "2 document(s) scored only for base 'base' and 0 only for this run" in note["problem"]
    assert "298 shared documents" in note["meaning"]
    base = read_samples(_samples(tmp_path, "base"))
    run = read_samples(path)
    shared = [doc not in (0, 1) for doc in base.doc_ids]
    expected = paired_delta_ci(base.scores[shared], run.scores, seed=task_seed(0, TASK))
    assert _run(data, "forgets")["forgetting_ci"][TASK] == pytest.approx(list(expected), abs=1e-4)
    assert _run(data, "forgets")["delta_ci_paired"]["EMT"] is True
    page = (tmp_path / "site" / "index.html").read_text()
    assert "were not scored on the same documents" in page


def test_samples_without_doc_ids_fall_back_to_independent_group_intervals(tmp_path):
    runs = _runs(tmp_path)
    for run in ("base", "forgets"):
        path = _samples(tmp_path, run)
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("\n".join(json.dumps({k: v for k, v in x.items() if k != "doc_id"}) for x in lines))
    data = _build(tmp_path, runs)
    forgets = _run(data, "forgets")
    assert forgets["forgetting_ci"][TASK] is None
    assert forgets["delta_ci_paired"]["EMT"] is False
    low, high = forgets["delta_ci"]["EMT"]
    assert low < 0 < high  # the old, independent interval
    assert any("cannot pair" in note["problem"] for note in data["pairing"])


def test_page_and_csv_mark_what_is_significant(tmp_path):
    data = _build(tmp_path, _runs(tmp_path))
    page = (tmp_path / "site" / "index.html").read_text()
    rows = {
        row.split('"', 2)[1].split()[0]: row.split("</tr>")[0] for row in page.split("<tr data-search=")[1:]
    }
    forgets, same = rows["forgets"], rows["same"]
    assert forgets.count('<sup class="sig">*</sup>') == 2  # the task's accuracy cell and the EMT Δ
    assert "paired 95% interval" in forgets and "(significant)" in forgets
    assert '<sup class="sig">' not in same and "(not significant)" in same
    assert '<p class="legend">' in page and "excludes 0" in page
    table = list(csv.DictReader(io.StringIO((tmp_path / "site" / "leaderboard.csv").read_text())))
    row = next(r for r in table if r["name"] == "forgets")
    low, high = _run(data, "forgets")["forgetting_ci"][TASK]
    assert float(row[f"forgetting_ci_low:{TASK}"]) == pytest.approx(low, abs=1e-4)
    assert float(row[f"forgetting_ci_high:{TASK}"]) == pytest.approx(high, abs=1e-4)
    assert float(row["delta_ci_low:EMT"]) == pytest.approx(low, abs=1e-4)
    assert significant((low, high))


def test_paired_group_delta_of_several_tasks_matches_the_public_function(tmp_path):
    from emtbench.metrics import paired_group_delta_ci

    tasks = ["t_a", "t_b"]
    write_results(tmp_path / "base", {"t_a": 80.0, "t_b": 60.0}, samples=200)
    write_results(tmp_path / "ft", {"t_a": 80.0, "t_b": 55.0}, samples=200)
    runs = [
        {"name": "base", "results": "base", "method": "zero-shot"},
        {"name": "ft", "results": "ft", "method": "lora", "base": "base"},
    ]
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"groups": {"G": tasks}, "runs": runs}))
    assert (
        run_emtbench("leaderboard", "build", str(manifest), "--out", str(tmp_path / "site"), "--quiet") == 0
    )
    data = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    pairs = [
        (read_samples(_samples(tmp_path, "base", t)).scores, read_samples(_samples(tmp_path, "ft", t)).scores)
        for t in tasks
    ]
    expected = paired_group_delta_ci(pairs, seeds=[task_seed(0, t) for t in tasks])
    assert _run(data, "ft")["delta_ci"]["G"] == pytest.approx(list(expected), abs=1e-4)
    assert _run(data, "ft")["delta"]["G"] == pytest.approx(
        2 / (1 / 80 + 1 / 60) - 2 / (1 / 80 + 1 / 55), abs=1e-4
    )
    assert _run(data, "ft")["delta_significant"]["G"] is True
