"""`emtbench judge-agreement` on logged samples: real eval output and a labelled synthetic file."""

from __future__ import annotations

import json

import pytest
from conftest import run_emtbench
from judge_examples import LABELLED_ANSWERS, labelled_items, oracle_reply
from openai_server import OpenAIServer

from emtbench.datasets.emt import get_dataset
from emtbench.judges.rule import rule_judgement


@pytest.fixture
def oracle_metadata(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-agreement-test")
    with OpenAIServer() as server:
        server.responder = oracle_reply
        yield (
            server,
            json.dumps(
                {
                    "judge_base_url": server.base_url,
                    "judge_model": "oracle",
                    "judge_cache": str(tmp_path / "cache.sqlite"),
                }
            ),
        )


def write_samples(path, rows) -> None:
    """Records shaped like lm-eval's --log_samples output (the fields the command reads)."""
    with path.open("w") as out:
        for doc_id, (task, answer, label, _) in enumerate(rows):
            dataset = get_dataset(task)
            doc = {"image": "hash", "label": dataset.labels.index(label), "emt_task": dataset.task}
            out.write(
                json.dumps({"doc_id": doc_id, "doc": doc, "resps": [[answer]], "filtered_resps": [answer]})
            )
            out.write("\n")


def test_agreement_and_kappa_against_an_oracle_llm(oracle_metadata, tmp_path, capsys):
    _server, metadata = oracle_metadata
    samples = tmp_path / "samples_emt_mix.jsonl"
    write_samples(samples, LABELLED_ANSWERS)
    disagreements = tmp_path / "disagree.jsonl"
    code = run_emtbench(
        "judge-agreement", str(samples), "--judges", "rule,cascade,llm",
        "--metadata", metadata, "--disagreements", str(disagreements),
    )  # fmt: skip
    assert code == 0
    report = capsys.readouterr().out
    rule_right = [rule_judgement(item).correct == truth for item, truth in labelled_items()]
    expected = sum(rule_right) / len(rule_right)
    assert f"{len(LABELLED_ANSWERS)} answers re-judged" in report
    rows = {line[:26].strip(): line.split() for line in report.splitlines() if " vs " in line}
    assert float(rows["rule vs llm"][-3]) == pytest.approx(expected, abs=1e-3)
    assert float(rows["cascade vs llm"][-3]) == 1.0 and float(rows["cascade vs llm"][-2]) == 1.0
    written = [json.loads(line) for line in disagreements.read_text().splitlines()]
    assert {r["answer"] for r in written} == {
        a for (_, a, _, _), right in zip(LABELLED_ANSWERS, rule_right, strict=True) if not right
    }
    assert set(written[0]["verdicts"]) == {"rule", "cascade", "llm"}


def test_rejudges_real_eval_samples(lm_eval_run, oracle_metadata, tmp_path, capsys):
    server, metadata = oracle_metadata
    paths = sorted(lm_eval_run.rglob("samples_emt_*.jsonl"))
    files = [str(p) for p in paths]
    lines = sum(len(p.read_text().splitlines()) for p in paths)
    server.responder = None
    server.default = "yes"
    code = run_emtbench(
        "judge-agreement", *files, "--judges", "rule,llm", "--metadata", metadata,
        "--disagreements", str(tmp_path / "d.jsonl"),
    )  # fmt: skip
    assert code == 0
    assert f"{lines} answers re-judged" in capsys.readouterr().out
    assert (tmp_path / "d.jsonl").exists()


def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, capsys):
    broken = tmp_path / "samples.jsonl"
    broken.write_text('{"doc": {"label": 1}}\n')
    out = tmp_path / "d.jsonl"
    code = run_emtbench(
        "judge-agreement", str(broken), "--judges", "rule,embedding", "--disagreements", str(out)
    )
    assert code == 2
    error = capsys.readouterr().err
    assert f"{broken}:1" in error and "emt_task" in error
    assert not out.exists()
    assert run_emtbench("judge-agreement", str(broken), "--judges", "rule") == 2
    assert "at least two" in capsys.readouterr().err
