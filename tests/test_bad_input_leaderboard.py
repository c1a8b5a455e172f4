"""Bad input for `emtbench leaderboard build`: results files, samples files, manifests, matrices, records.

Each case writes a small valid leaderboard (tests' own generator), breaks one file, and runs the real
CLI. It must refuse with a named error listing the file and field, write nothing, and leave an
earlier site in place; nothing it writes may hold NaN (leaderboard.json is parsed back strictly).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_input import cli, expect_handled, expect_refusal, run_cli

from emtbench.testing.leaderboard import STAMP, write_results

AREA_RESULTS = "results JSON"
AREA_SAMPLES = "samples JSONL"
AREA_MANIFEST = "manifests"
AREA_MATRIX = "accuracy matrices / run records"

ACCURACY = {"emt_digits": 80.0, "emt_fashion_mnist": 60.0}


def _board(
    root: Path, *, runs: list[dict] | None = None, samples: int = 10, extra: dict | None = None
) -> Path:
    write_results(root / "base", ACCURACY, samples=samples)
    write_results(root / "ft", {"emt_digits": 90.0, "emt_fashion_mnist": 50.0}, samples=samples)
    manifest = {
        "title": "bad input",
        "bootstrap": {"resamples": 50},
        "runs": runs
        or [
            {"name": "base", "results": "base"},
            {"name": "ft", "results": "ft", "base": "base", "method": "lora", "target_tasks": ["emt_digits"]},
        ],
        **(extra or {}),
    }
    path = root / "leaderboard.yaml"
    path.write_text(json.dumps(manifest, indent=1))
    return path


def _site(root: Path) -> Path:
    """An earlier site that a refused build must leave untouched."""
    site = root / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>the previous build</p>")
    (site / "leaderboard.json").write_text('{"previous": true}')
    return site


def _refuse(area: str, case: str, root: Path, match: str | None = None) -> None:
    manifest = root / "leaderboard.yaml"
    site = _site(root)
    expect_refusal(
        area,
        case,
        cli("leaderboard", "build", str(manifest), "--out", str(site), "--quiet"),
        match=match,
        protect=[site],
    )


def _results_file(root: Path, run: str = "ft") -> Path:
    return root / run / f"results_{STAMP}.json"


def _samples_file(root: Path, task: str = "emt_digits", run: str = "ft") -> Path:
    return root / run / f"samples_{task}_{STAMP}.jsonl"


# --- results files --------------------------------------------------------------------------

RESULTS_EDITS = {
    "NaN accuracy": lambda t: t.replace('"acc,none": 0.9', '"acc,none": NaN'),
    "Infinity accuracy": lambda t: t.replace('"acc,none": 0.9', '"acc,none": Infinity'),
    "accuracy 1e999": lambda t: t.replace('"acc,none": 0.9', '"acc,none": 1e999'),
    "accuracy 1.5": lambda t: t.replace('"acc,none": 0.9', '"acc,none": 1.5'),
    "accuracy as a string": lambda t: t.replace('"acc,none": 0.9', '"acc,none": "0.9"'),
    "accuracy true": lambda t: t.replace('"acc,none": 0.9', '"acc,none": true'),
    "duplicate task key": lambda t: t.replace(
        '"results": {', '"results": {"emt_digits": {"acc,none": 0.1},', 1
    ),
    "duplicate results key": lambda t: t.replace('"results": {', '"results": {}, "results": {', 1),
    "truncated": lambda t: t[: len(t) // 2],
    "empty": lambda t: "",
    "a list": lambda t: "[" + t + "]",
    "deep nesting": lambda t: t.replace(
        '"config": {', '"config": ' + "[" * 5000 + "]" * 5000 + ', "c": {', 1
    ),
    "lone surrogate in a task name": lambda t: t.replace('"emt_digits": {', '"emt_digits\\ud800": {', 1),
    "judge_coverage 1.7": lambda t: t.replace(
        '"acc,none": 0.9', '"acc,none": 0.9, "judge_coverage,none": 1.7'
    ),
}


@pytest.mark.parametrize("case", RESULTS_EDITS)
def test_broken_results_files(tmp_path, case):
    _board(tmp_path)
    path = _results_file(tmp_path)
    path.write_text(RESULTS_EDITS[case](path.read_text()))
    _refuse(AREA_RESULTS, case, tmp_path, match=r"runs\[1\]")


def test_non_utf8_results(tmp_path):
    _board(tmp_path)
    path = _results_file(tmp_path)
    path.write_bytes(path.read_bytes().replace(b'"model": "crafted"', b'"model": "caf\xe9"'))
    _refuse(AREA_RESULTS, "non-UTF-8 results", tmp_path, match="UTF-8")


def test_a_task_the_judge_could_not_judge_at_all(tmp_path):
    """A judge outage leaves acc out of the results: the cell is a named problem, not 0%."""
    _board(tmp_path)
    path = _results_file(tmp_path)
    data = json.loads(path.read_text())
    data["results"]["emt_digits"] = {
        "alias": "emt_digits",
        "judge_coverage,none": 0.0,
        "judge_error,none": 1.0,
    }
    path.write_text(json.dumps(data))
    _refuse(AREA_RESULTS, "every answer judge_error", tmp_path, match="could judge none")


def test_low_judge_coverage_is_flagged_not_hidden(tmp_path):
    _board(tmp_path, samples=0)
    path = _results_file(tmp_path)
    data = json.loads(path.read_text())
    data["results"]["emt_digits"].update({"judge_coverage,none": 0.5, "judge_error,none": 0.5})
    path.write_text(json.dumps(data))
    site = tmp_path / "site"

    def case() -> bool:
        code, _ = run_cli(
            "leaderboard", "build", str(tmp_path / "leaderboard.yaml"), "--out", str(site), "--quiet"
        )
        board = json.loads((site / "leaderboard.json").read_text())
        ft = next(run for run in board["runs"] if run["name"] == "ft")
        page = (site / "index.html").read_text()
        return (
            code == 0
            and ft["low_judge_coverage"] == ["emt_digits"]
            and ft["judge_coverage"]["emt_digits"] == 0.5
            and len(board["flags"]) == 1
            and "low-coverage" in page
            and "Low judge coverage" in page
        )

    expect_handled(AREA_RESULTS, "judge coverage 50% (flagged)", case)


# --- samples files --------------------------------------------------------------------------


def _edit_sample_lines(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


SAMPLES_EDITS = {
    "NaN in a line": lambda lines: [lines[0].replace('"acc": 1.0', '"acc": NaN'), *lines[1:]],
    "Infinity in a line": lambda lines: [lines[0].replace('"acc": 1.0', '"acc": Infinity'), *lines[1:]],
    "score 2.0": lambda lines: [lines[0].replace('"acc": 1.0', '"acc": 2.0'), *lines[1:]],
    "score true": lambda lines: [lines[0].replace('"acc": 1.0', '"acc": true'), *lines[1:]],
    "duplicate key in a line": lambda lines: [
        lines[0].replace('"acc": 1.0', '"acc": 0.0, "acc": 1.0'),
        *lines[1:],
    ],
    "file appended to itself": lambda lines: lines + lines,
    "truncated last line": lambda lines: [*lines[:-1], lines[-1][:15]],
    "a line that is a list": lambda lines: ["[1, 2]", *lines[1:]],
    "no acc and no metrics list": lambda lines: ['{"doc_id": 0, "filter": "none"}', *lines[1:]],
    "every acc flipped (another run's samples)": lambda lines: [
        line.replace('"acc": 1.0', '"acc": X')
        .replace('"acc": 0.0', '"acc": 1.0')
        .replace('"acc": X', '"acc": 0.0')
        for line in lines
    ],
    "all right (the issue's 80.0 shown with [100.0, 100.0])": lambda lines: [
        line.replace('"acc": 0.0', '"acc": 1.0') for line in lines
    ],
    "one sample missing": lambda lines: lines[:-1],
    "empty": lambda lines: [""],
}


@pytest.mark.parametrize("case", SAMPLES_EDITS)
def test_broken_samples_files(tmp_path, case):
    _board(tmp_path)
    path = _samples_file(tmp_path)
    _edit_sample_lines(path, SAMPLES_EDITS[case])
    _refuse(AREA_SAMPLES, case, tmp_path, match=r"samples_emt_digits")


def test_non_utf8_samples(tmp_path):
    _board(tmp_path)
    path = _samples_file(tmp_path)
    path.write_bytes(path.read_bytes() + b'{"doc_id": 99, "acc": 1.0, "note": "\xff"}\n')
    _refuse(AREA_SAMPLES, "non-UTF-8 samples", tmp_path, match="UTF-8")


def test_judge_errors_in_samples_are_left_out_like_lm_eval_does(tmp_path):
    """Samples of a partly judged task: lines without acc (judge_error) are not scored as wrong."""
    _board(tmp_path)
    results = _results_file(tmp_path)
    data = json.loads(results.read_text())
    # 10 samples, 9 correct: the results file reports 9/9 judged right over 0.9 coverage... use 8 of 9.
    lines = [
        {"doc_id": i, "filter": "none", "metrics": ["acc", "judge_coverage"], "acc": 1.0 if i < 8 else 0.0,
         "judge_coverage": 1.0} for i in range(9)
    ]  # fmt: skip
    lines.append(
        {"doc_id": 9, "filter": "none", "metrics": ["judge_coverage", "judge_error"], "judge_coverage": 0.0}
    )
    _samples_file(tmp_path).write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    data["results"]["emt_digits"].update({"acc,none": 8 / 9, "judge_coverage,none": 0.9})
    data["n-samples"] = {"emt_digits": {"original": 10, "effective": 10}}
    results.write_text(json.dumps(data))
    site = tmp_path / "site"

    def case() -> bool:
        code, _ = run_cli(
            "leaderboard", "build", str(tmp_path / "leaderboard.yaml"), "--out", str(site), "--quiet"
        )
        board = json.loads((site / "leaderboard.json").read_text())
        ft = next(run for run in board["runs"] if run["name"] == "ft")
        low, high = ft["accuracy_ci"]["emt_digits"]
        return (
            code == 0 and ft["accuracy"]["emt_digits"] == pytest.approx(100 * 8 / 9, abs=1e-3) and low < high
        )

    expect_handled(AREA_SAMPLES, "judge_error lines without acc", case)


# --- manifests ------------------------------------------------------------------------------

MANIFESTS = {
    "duplicate run key": "runs:\n  - name: a\n    name: b\n    results: base\n",
    "duplicate top-level key": "runs:\n  - {name: a, results: base}\nruns:\n  - {name: b, results: ft}\n",
    "params_changed .nan": "runs:\n  - {name: a, results: base, params_changed: .nan}\n",
    "params_changed .inf": "runs:\n  - {name: a, results: base, params_changed: .inf}\n",
    "params_changed true": "runs:\n  - {name: a, results: base, params_changed: true}\n",
    "resamples as a string": "bootstrap: {resamples: '1000'}\nruns:\n  - {name: a, results: base}\n",
    "a list": "- name: a\n  results: base\n",
    "empty": "",
    "runs: null": "runs:\n",
    "a name that is a number": "runs:\n  - {name: 7, results: base}\n",
    "alias bomb": "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nruns:\n  - {name: a, results: base}\n",
    "deep nesting": "notes: " + "[" * 3000 + "]" * 3000 + "\nruns:\n  - {name: a, results: base}\n",
    "javascript: url": "runs:\n  - {name: a, results: base, url: 'javascript:alert(1)'}\n",
    "unclosed flow": "runs: [{name: a, results: base\n",
    "tab indentation": "runs:\n\t- {name: a, results: base}\n",
}


@pytest.mark.parametrize("case", MANIFESTS)
def test_broken_manifests(tmp_path, case):
    _board(tmp_path)
    (tmp_path / "leaderboard.yaml").write_text(MANIFESTS[case])
    _refuse(AREA_MANIFEST, case, tmp_path, match="leaderboard.yaml")


def test_a_manifest_that_asks_for_a_python_object_runs_nothing(tmp_path):
    _board(tmp_path)
    sentinel = tmp_path / "PWNED"
    (tmp_path / "leaderboard.yaml").write_text(
        f"runs: !!python/object/apply:os.system ['touch {sentinel}']\n"
    )
    site = _site(tmp_path)
    expect_refusal(
        AREA_MANIFEST,
        "!!python/object/apply:os.system",
        cli("leaderboard", "build", str(tmp_path / "leaderboard.yaml"), "--out", str(site)),
        sentinel=sentinel,
        protect=[site],
    )


def test_non_utf8_manifest(tmp_path):
    _board(tmp_path)
    (tmp_path / "leaderboard.yaml").write_bytes(b"title: caf\xe9\nruns:\n  - {name: a, results: base}\n")
    _refuse(AREA_MANIFEST, "non-UTF-8 manifest", tmp_path, match="UTF-8")


@pytest.mark.parametrize(
    ("case", "runs"),
    [
        ("two runs name each other as base", [
            {"name": "a", "results": "base", "base": "b", "method": "lora"},
            {"name": "b", "results": "ft", "base": "a", "method": "lora"},
        ]),
        ("a cycle of three", [
            {"name": "a", "results": "base", "base": "c", "method": "lora"},
            {"name": "b", "results": "ft", "base": "a", "method": "lora"},
            {"name": "c", "results": "ft", "base": "b", "method": "lora"},
        ]),
    ],
)  # fmt: skip
def test_runs_that_name_each_other_as_base(tmp_path, case, runs):
    _board(tmp_path, runs=runs)
    _refuse(AREA_MANIFEST, case, tmp_path, match="each other as base")


# --- accuracy matrices and run records ------------------------------------------------------

MATRICES = {
    "NaN": '{"tasks": ["a", "b"], "stages": ["a", "b"], "matrix": [[90, NaN], [80, 70]]}',
    "Infinity": '{"tasks": ["a", "b"], "stages": ["a", "b"], "matrix": [[90, Infinity], [80, 70]]}',
    "150%": '{"tasks": ["a", "b"], "stages": ["a", "b"], "matrix": [[90, 150], [80, 70]]}',
    "a string": '{"tasks": ["a", "b"], "stages": ["a", "b"], "matrix": [[90, "x"], [80, 70]]}',
    "ragged rows": '{"tasks": ["a", "b"], "stages": ["a", "b"], "matrix": [[90], [80, 70]]}',
    "duplicate task names": '{"tasks": ["a", "a"], "stages": ["a", "b"], "matrix": [[90, 1], [80, 70]]}',
    "duplicate keys": '{"tasks": ["a", "b"], "tasks": ["c", "d"], "stages": ["a", "b"], "matrix": [[1, 2], [3, 4]]}',
    "truncated": '{"tasks": ["a", "b"], "stages": ["a", "b"], "matr',
}


@pytest.mark.parametrize("case", MATRICES)
def test_broken_accuracy_matrices(tmp_path, case):
    _board(tmp_path)
    manifest = json.loads((tmp_path / "leaderboard.yaml").read_text())
    manifest["runs"][1]["accuracy_matrix"] = "matrix.json"
    (tmp_path / "leaderboard.yaml").write_text(json.dumps(manifest))
    (tmp_path / "matrix.json").write_text(MATRICES[case])
    _refuse(AREA_MATRIX, f"matrix: {case}", tmp_path, match="accuracy_matrix")


RECORDS = {
    "NaN fraction": '{"parameters": {"changed_fraction": NaN}}',
    "parameters a list": '{"parameters": [0.1]}',
    "a list": "[1, 2]",
    "truncated": '{"parameters": {"changed_',
    "duplicate keys": '{"parameters": {"changed_fraction": 0.1, "changed_fraction": 0.9}}',
    "fraction 3": '{"parameters": {"changed_fraction": 3}}',
}


@pytest.mark.parametrize("case", RECORDS)
def test_broken_run_records(tmp_path, case):
    _board(tmp_path)
    manifest = json.loads((tmp_path / "leaderboard.yaml").read_text())
    manifest["runs"][1]["run_record"] = "emtbench_run.json"
    (tmp_path / "leaderboard.yaml").write_text(json.dumps(manifest))
    (tmp_path / "emtbench_run.json").write_text(RECORDS[case])
    _refuse(AREA_MATRIX, f"run record: {case}", tmp_path, match="run_record")
