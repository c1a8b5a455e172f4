"""`emtbench leaderboard build/serve` on results from a real lm-eval run plus crafted lm-eval-shaped files."""

from __future__ import annotations

import csv
import io
import json
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import run_emtbench

from emtbench.core.errors import EmtbenchError
from emtbench.leaderboard.manifest import default_groups, load_manifest
from emtbench.leaderboard.site import make_server
from emtbench.metrics import delta, group_score, tailor_scores
from emtbench.testing.leaderboard import BASE_ACCURACY, INJECTED_NAME, write_demo_manifest, write_results

OUTPUTS = ("index.html", "leaderboard.json", "leaderboard.csv")


def build(manifest: Path, out: Path, *flags: str) -> int:
    return run_emtbench("leaderboard", "build", str(manifest), "--out", str(out), "--quiet", *flags)


def write_manifest(folder: Path, runs: list[dict], **top) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump({"runs": runs, **top}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory):
    """The demo manifest plus the real tiny-LLaVA lm-eval run (the checked-in one, with its samples)."""
    from conftest import LM_EVAL_RUN

    folder = tmp_path_factory.mktemp("demo")
    real = {"name": "tiny-llava (real lm-eval run)", "results": str(LM_EVAL_RUN), "method": "zero-shot"}
    manifest = write_demo_manifest(folder, extra_runs=[real])
    site = folder / "site"
    assert build(manifest, site) == 0
    return manifest, site, json.loads((site / "leaderboard.json").read_text())


def _run(data: dict, name: str) -> dict:
    return next(run for run in data["runs"] if run["name"] == name)


def test_default_groups_ship_with_the_package():
    groups = default_groups()
    assert groups["NLU"] == ["arc_easy", "arc_challenge", "winogrande", "wsc273"]
    assert groups["NLG"] == ["lambada_openai"]
    assert groups["VL"] == ["emt_vqav2_slim", "emt_gqa_slim", "emt_textvqa_slim", "emt_refcoco_slim"]
    assert groups["EMT"] == [
        "emt_mnist",
        "emt_cifar10",
        "emt_cifar100",
        "emt_miniimagenet",
        "emt_fashion_mnist",
        "emt_digits",
    ]


def test_real_lm_eval_run_carries_accuracy_and_intervals(demo_site, lm_eval_run):
    _, _, data = demo_site
    results = json.loads(next(lm_eval_run.rglob("results_*.json")).read_text())["results"]
    real = _run(data, "tiny-llava (real lm-eval run)")
    for task in ("emt_digits", "emt_fashion_mnist"):
        assert real["accuracy"][task] == pytest.approx(100 * results[task]["acc,none"], abs=1e-4)
        low, high = real["accuracy_ci"][task]
        assert low <= real["accuracy"][task] <= high
    assert real["accuracy"]["arc_easy"] is None  # never evaluated: an empty cell, not a zero
    assert real["delta"]["EMT"] is None  # a zero-shot model has no base to forget from


def test_forgetting_numbers_match_the_metric_functions(demo_site):
    _, _, data = demo_site
    lora = _run(data, "lora-digits")
    after = BASE_ACCURACY | {
        "emt_digits": 96.0,
        "arc_challenge": 20.0,
        "lambada_openai": 30.0,
    }  # 50 samples: 95 → 48/50
    nlu = ["arc_easy", "arc_challenge", "winogrande", "wsc273"]
    assert lora["delta"]["NLU"] == pytest.approx(delta(BASE_ACCURACY, after, nlu), abs=1e-4)
    assert lora["delta"]["NLU"] == pytest.approx(7.4442, abs=1e-4)
    assert lora["delta"]["NLG"] == pytest.approx(10.0, abs=1e-4)
    assert lora["delta"]["NL"] == pytest.approx((7.4442 + 10.0) / 2, abs=1e-4)
    assert lora["delta"]["VL"] is None  # not evaluated
    assert lora["group_score"]["NLU"] == pytest.approx(group_score(after, nlu), abs=1e-4)
    low, high = lora["delta_ci"]["NLU"]
    assert low < lora["delta"]["NLU"] < high
    original = [task for task in BASE_ACCURACY if task != "emt_digits"]
    expected = tailor_scores(after, original, ["emt_digits"])
    assert lora["h_score"] == pytest.approx(expected.h_score, abs=1e-4)
    assert lora["average"] == pytest.approx(expected.average, abs=1e-4)
    assert lora["params_changed"] == 0.05  # read from the checkpoint's emtbench_run.json
    assert lora["forgetting"]["arc_challenge"] == pytest.approx(10.0)
    seq = _run(data, "seq-msgm")
    assert seq["continual"]["bwt"] == pytest.approx(-7.0)  # 85 − 92
    assert seq["continual"]["forgetting"] == pytest.approx(7.0)
    assert seq["continual"]["matrix"] == [[92.0, 35.0], [85.0, 70.0]]
    assert data["skipped"] == []


def test_csv_holds_the_same_numbers_as_json(demo_site):
    _, site, data = demo_site
    rows = list(csv.DictReader(io.StringIO((site / "leaderboard.csv").read_text())))
    assert [row["name"] for row in rows] == [run["name"] for run in data["runs"]]
    for row, run in zip(rows, data["runs"], strict=True):
        for task in data["tasks"]:
            expected = run["accuracy"][task]
            assert (row[f"acc:{task}"] == "") == (expected is None)
            if expected is not None:
                assert float(row[f"acc:{task}"]) == pytest.approx(expected, abs=1e-4)
        if run["h_score"] is not None:
            assert float(row["h_score"]) == pytest.approx(run["h_score"], abs=1e-4)


def test_page_escapes_every_untrusted_string(demo_site):
    _, site, _ = demo_site
    page = (site / "index.html").read_text()
    assert INJECTED_NAME not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script") == 1  # only the page's own inline script
    assert 'src="http' not in page and '<link rel="stylesheet"' not in page  # nothing loaded from elsewhere
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert '<a href="https://example.org/base-7b"' in page


def test_build_is_deterministic(demo_site, tmp_path):
    manifest, site, _ = demo_site
    assert build(manifest, tmp_path / "again") == 0
    for name in OUTPUTS:
        assert (tmp_path / "again" / name).read_bytes() == (site / name).read_bytes(), name


def test_every_bad_input_is_reported_and_nothing_is_written(tmp_path, capsys):
    write_results(tmp_path / "base", BASE_ACCURACY)
    write_results(tmp_path / "short", {"emt_digits": 50.0})
    (tmp_path / "broken.json").write_text("{not json")
    runs = [
        {"name": "base", "results": "base"},
        {"name": "gone", "results": "missing/results.json", "base": "base", "method": "lora"},
        {"name": "broken", "results": "broken.json", "base": "base", "method": "lora"},
        {"name": "short", "results": "short", "base": "base", "method": "lora"},
        {"name": "orphan", "results": "base", "base": "no-such-model", "method": "lora"},
        {"name": "base", "results": "base"},
        {"name": "baseless", "results": "base", "method": "soft"},
    ]
    manifest = write_manifest(tmp_path, runs)
    out = tmp_path / "site"
    assert build(manifest, out) == 2
    error = capsys.readouterr().err
    assert "runs[1].results" in error and "file not found" in error and "'gone' skipped" in error
    assert "runs[2].results" in error and "not valid JSON" in error
    assert (
        "runs[3].results" in error
        and "'arc_easy'" in error
        and "evaluated for base 'base' but are missing" in error
    )
    assert "runs[4].base" in error and "'no-such-model' is not a run" in error
    assert "runs[5].name" in error and "two runs are named 'base'" in error
    assert "runs[6].base" in error and "names no `base`" in error
    assert str(manifest) in error and "--allow-partial" in error
    assert not out.exists()

    assert build(manifest, out, "--allow-partial") == 0
    error = capsys.readouterr().err
    assert "skipped 6 part(s)" in error
    data = json.loads((out / "leaderboard.json").read_text())
    assert [run["name"] for run in data["runs"]] == ["base", "short", "orphan", "baseless"]
    assert len(data["skipped"]) == 6
    assert "Built with --allow-partial: 6 problem(s)" in (out / "index.html").read_text()


def test_schema_errors_name_every_field(tmp_path, capsys):
    runs = [
        {"name": "a", "resluts": "x"},
        {"name": "b", "results": "x", "url": "javascript:alert(1)", "params_changed": 2},
    ]
    manifest = write_manifest(tmp_path, runs)
    assert build(manifest, tmp_path / "site") == 2
    error = capsys.readouterr().err
    assert "4 problem(s) in the manifest" in error
    for field in ("runs[0].results", "runs[0].resluts", "runs[1].url", "runs[1].params_changed"):
        assert field in error
    with pytest.raises(EmtbenchError, match="not valid YAML"):
        (tmp_path / "bad.yaml").write_text("runs: [unclosed")
        load_manifest(tmp_path / "bad.yaml")
    with pytest.raises(EmtbenchError, match="cannot read the manifest"):
        load_manifest(tmp_path / "absent.yaml")


def test_results_folder_must_hold_one_results_file_and_an_accuracy(tmp_path, capsys):
    write_results(tmp_path / "two", {"t": 10.0}, stamp="a")
    write_results(tmp_path / "two", {"t": 20.0}, stamp="b")
    (tmp_path / "bleu").mkdir()
    (tmp_path / "bleu" / "results_x.json").write_text(json.dumps({"results": {"t": {"bleu,none": 3.0}}}))
    manifest = write_manifest(tmp_path, [{"name": "a", "results": "two"}, {"name": "b", "results": "bleu"}])
    assert build(manifest, tmp_path / "site") == 2
    error = capsys.readouterr().err
    assert "holds 2 results files" in error
    assert "task 't' has no acc / exact_match / accuracy metric (it has: bleu)" in error
    manifest = write_manifest(tmp_path, [{"name": "b", "results": "bleu"}], metrics={"t": "bleu"})
    assert build(manifest, tmp_path / "site") == 2  # 3.0 is no accuracy in [0, 1]
    assert "is not an accuracy in [0, 1]" in capsys.readouterr().err


def test_csv_cells_cannot_start_a_formula(tmp_path):
    write_results(tmp_path / "r", {"t": 50.0})
    manifest = write_manifest(tmp_path, [{"name": '=HYPERLINK("http://x")', "results": "r"}])
    assert build(manifest, tmp_path / "site") == 0
    rows = list(csv.reader(io.StringIO((tmp_path / "site" / "leaderboard.csv").read_text())))
    assert rows[1][0] == '\'=HYPERLINK("http://x")'


def test_serve_answers_on_localhost(demo_site):
    _, site, _ = demo_site
    server = make_server(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as response:
            assert response.read() == (site / "index.html").read_bytes()
        with urllib.request.urlopen(f"http://{host}:{port}/leaderboard.json", timeout=10) as response:
            assert json.loads(response.read())["title"] == "emtbench demo leaderboard"
    finally:
        server.shutdown()
        server.server_close()


def test_serve_refuses_a_folder_without_a_site(tmp_path, capsys):
    assert run_emtbench("leaderboard", "serve", str(tmp_path)) == 2
    assert "holds no index.html" in capsys.readouterr().err


def test_help_teaches_with_an_example(capsys):
    with pytest.raises(SystemExit):
        run_emtbench("leaderboard", "build", "--help")
    text = capsys.readouterr().out
    assert "emtbench leaderboard build leaderboard.yaml --out site/" in text
    assert "accuracy_matrix" in text and "--allow-partial" in text


def test_encoder_gap_against_a_zero_shot_encoder_run(tmp_path):
    """EMT Table 2 numbers: CLIP ViT-L-14 vs LLaVA-7b on MNIST and CIFAR-10."""
    write_results(tmp_path / "clip", {"emt_mnist": 77.36, "emt_cifar10": 95.39})
    write_results(tmp_path / "llava", {"emt_mnist": 56.96, "emt_cifar10": 56.71})
    runs = [
        {"name": "clip-vit-l-14", "results": "clip", "method": "encoder"},
        {"name": "llava-7b", "results": "llava", "encoder": "clip-vit-l-14"},
    ]
    assert build(write_manifest(tmp_path, runs), tmp_path / "site") == 0
    data = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    gap = _run(data, "llava-7b")["encoder_gap"]
    assert gap == pytest.approx(((77.36 - 56.96) + (95.39 - 56.71)) / 2, abs=1e-4)
    assert _run(data, "clip-vit-l-14")["encoder_gap"] is None
