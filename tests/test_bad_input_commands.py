"""Bad input for commands: judge-agreement's samples and output, output paths, eval's options.

Output paths are checked before any work: a refusal after an hour of training (or after paying for
every judge call) loses that work, so those cases also count as ``lost``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_input import cli, expect_refusal
from openai_server import OpenAIServer

AREA_AGREEMENT = "judge-agreement samples"
AREA_OUTPUTS = "output paths"
AREA_EVAL = "eval options"


def _sample(label=3, answer="three", task="emt_digits", **overrides) -> str:
    record = {
        "doc_id": 0,
        "doc": {"label": label, "emt_task": task},
        "resps": [[answer]],
        "filtered_resps": [answer],
    }
    record.update(overrides)
    return json.dumps(record)


SAMPLE_LINES = {
    "label 3.9": _sample(label=3.9),
    "label true": _sample(label=True),
    "label '3'": _sample(label="3"),
    "label -1": _sample(label=-1),
    "label 10 of 10": _sample(label=10),
    "resps a string": json.dumps({"doc": {"label": 3, "emt_task": "emt_digits"}, "resps": "three"}),
    "resps [[5]]": _sample(resps=[[5]]),
    "resps [[]]": json.dumps({"doc": {"label": 3, "emt_task": "emt_digits"}, "resps": [[]]}),
    "emt_task a list": _sample(task=["emt_digits"]),
    "unknown task": _sample(task="emt_svhn"),
    "doc a string": json.dumps({"doc": "emt_digits", "resps": [["3"]]}),
    "NaN label": _sample().replace('"label": 3', '"label": NaN'),
    "duplicate doc key": _sample().replace('"doc": {', '"doc": {"label": 1, ', 1),
    "a JSON list line": "[1, 2, 3]",
    "truncated line": _sample()[:30],
    "lone surrogate answer": _sample().replace('"three"', '"\\udc80"'),
}


@pytest.mark.parametrize("case", SAMPLE_LINES)
def test_judge_agreement_refuses_malformed_samples(tmp_path, case):
    """The issue: label 3.9 became "3", true became "1", a string resps was judged as its first letter."""
    path = tmp_path / "samples_emt_digits.jsonl"
    path.write_text(_sample() + "\n" + SAMPLE_LINES[case] + "\n")
    out = tmp_path / "d.jsonl"
    expect_refusal(
        AREA_AGREEMENT,
        case,
        cli("judge-agreement", str(path), "--judges", "rule,embedding", "--disagreements", str(out)),
        match=f"{path}:2",
    )
    assert not out.exists()


def test_judge_agreement_non_utf8_samples(tmp_path):
    path = tmp_path / "samples_emt_digits.jsonl"
    path.write_bytes(_sample().encode().replace(b"three", b"tr\xe8s") + b"\n")
    expect_refusal(
        AREA_AGREEMENT,
        "non-UTF-8 samples",
        cli("judge-agreement", str(path), "--judges", "rule,embedding"),
        match="UTF-8",
    )


@pytest.mark.parametrize(
    "metadata",
    ['{"judge_model": "x"', '{"judge_model": NaN}', "[1]", '{"judge_model": "a", "judge_model": "b"}'],
)
def test_judge_agreement_bad_metadata(tmp_path, metadata):
    path = tmp_path / "samples_emt_digits.jsonl"
    path.write_text(_sample() + "\n")
    expect_refusal(
        AREA_AGREEMENT,
        f"--metadata {metadata}",
        cli("judge-agreement", str(path), "--metadata", metadata),
        match="--metadata",
    )


@pytest.mark.parametrize("where", ["a folder", "under a file", "in /proc"])
def test_disagreements_path_is_checked_before_any_judge_call(tmp_path, monkeypatch, where):
    """The issue: --disagreements was opened only after paying for every judge call."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = tmp_path / "samples_emt_digits.jsonl"
    path.write_text("\n".join(_sample(answer=f"maybe {i}") for i in range(5)) + "\n")
    (tmp_path / "file").write_text("x")
    target = {
        "a folder": tmp_path,
        "under a file": tmp_path / "file" / "d.jsonl",
        "in /proc": Path("/proc/d.jsonl"),
    }[where]
    with OpenAIServer() as server:
        metadata = json.dumps({"judge_base_url": server.base_url, "judge_cache": "none"})
        expect_refusal(
            AREA_OUTPUTS,
            f"judge-agreement --disagreements {where}",
            cli(
                "judge-agreement",
                str(path),
                "--judges",
                "rule,llm",
                "--metadata",
                metadata,
                "--disagreements",
                str(target),
            ),
            match="--disagreements",
            nothing_wasted=lambda: not server.requests,
        )


@pytest.mark.parametrize("where", ["a file", "under a file", "in /proc"])
def test_leaderboard_out_that_cannot_be_a_folder(tmp_path, where):
    from emtbench.testing.leaderboard import write_demo_manifest

    manifest = write_demo_manifest(tmp_path / "board")
    (tmp_path / "file").write_text("keep me")
    target = {
        "a file": tmp_path / "file",
        "under a file": tmp_path / "file" / "site",
        "in /proc": Path("/proc/site"),
    }[where]
    expect_refusal(
        AREA_OUTPUTS,
        f"leaderboard --out {where}",
        cli("leaderboard", "build", str(manifest), "--out", str(target), "--quiet"),
        match="--out",
        protect=[tmp_path / "file"],
    )


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    from emtbench.testing import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("bad-input-models") / "tiny-llava")


@pytest.mark.parametrize(
    ("where", "overwrite"),
    [("a file", False), ("a file", True), ("under a file", False), ("in /proc", True)],
)
def test_finetune_output_is_checked_before_training(tmp_path, tiny_llava, where, overwrite):
    """The issue: --output on a file or an unwritable path was found only after training."""
    (tmp_path / "file").write_text("keep me")
    target = {
        "a file": tmp_path / "file",
        "under a file": tmp_path / "file" / "out",
        "in /proc": Path("/proc/out"),
    }[where]
    argv = ["finetune", "--model", str(tiny_llava), "--method", "linear", "--data", "emt:digits",
            "--max-steps", "2", "--batch-size", "2", "--limit", "4", "--output", str(target)]  # fmt: skip
    checkpoints = target.parent / f".{target.name}.checkpoints"
    expect_refusal(
        AREA_OUTPUTS,
        f"finetune --output {where}{' --overwrite' if overwrite else ''}",
        cli(*argv, *(["--overwrite"] if overwrite else [])),
        match="--output",
        protect=[tmp_path / "file"],
        nothing_wasted=lambda: not checkpoints.exists(),
    )


@pytest.mark.parametrize(
    "record",
    ['{"method": "linear"', '{"method": NaN}', "[1]", "\xff\xfe", '{"method": "a", "method": "b"}'],
)
def test_a_malformed_run_record_in_the_output_folder(tmp_path, tiny_llava, record):
    """The issue: a malformed emtbench_run.json in --output raised a traceback."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "emtbench_run.json").write_bytes(record.encode("latin-1"))
    argv = ["finetune", "--model", str(tiny_llava), "--method", "linear", "--data", "emt:digits",
            "--max-steps", "2", "--batch-size", "2", "--limit", "4", "--output", str(out)]  # fmt: skip
    expect_refusal(
        AREA_OUTPUTS, f"emtbench_run.json {record!r}", cli(*argv), match="emtbench_run.json", protect=[out]
    )


@pytest.mark.parametrize(
    ("case", "argv"),
    [
        ("--limit 0", ["--limit", "0"]),
        ("--limit -3", ["--limit", "-3"]),
        ("--limit lots", ["--limit", "lots"]),
        ("--limit 2.5", ["--limit", "2.5"]),
        ("--metadata truncated JSON", ["--metadata", '{"split":']),
        ("--metadata NaN", ["--metadata", '{"fraction": NaN}']),
        ("--metadata duplicate keys", ["--metadata", '{"split": "test", "split": "train"}']),
        ("--metadata a list", ["--metadata", '[{"split": "test"}]']),
        ("--metadata key without value", ["--metadata", "split"]),
        ("--metadata unknown key", ["--metadata", '{"fracton": 0.2}']),
        (
            "--metadata judge option of the wrong type",
            ["--metadata", '{"judge": "llm", "judge_concurrency": "eight"}'],
        ),
    ],
)
def test_eval_options_that_lm_eval_would_crash_on(tmp_path, tiny_llava, monkeypatch, case, argv):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    full = ["eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava}", "--device", "cpu",
            "--tasks", "emt_digits", "--batch_size", "2", "--output_path", str(tmp_path / "out"), *argv]  # fmt: skip
    expect_refusal(AREA_EVAL, case, cli(*full))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_eval_unknown_task(tmp_path, tiny_llava):
    full = ["eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava}", "--device", "cpu",
            "--tasks", "emt_digitz", "--output_path", str(tmp_path / "out")]  # fmt: skip
    expect_refusal(AREA_EVAL, "unknown task", cli(*full), match="emt_digitz")
