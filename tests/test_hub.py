"""Cards the Hub reads and pushes that fail early, all over real HTTP against the fake Hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import LM_EVAL_RUN, run_emtbench


def make_run_folder(path: Path, record: dict) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (path / "emtbench_run.json").write_text(json.dumps({"versions": {"emtbench": "0"}, **record}))
    return path


def shifted_results(tmp_path: Path, name: str, flip: int) -> Path:
    """A copy of the checked-in lm-eval run with the first ``flip`` emt_digits answers marked correct."""
    out = tmp_path / name
    shutil.copytree(LM_EVAL_RUN, out)
    samples = next(out.glob("samples_emt_digits_*.jsonl"))
    lines = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    for line in lines[:flip]:
        line["acc"] = 1.0
    samples.write_text("".join(json.dumps(line) + "\n" for line in lines))
    results_file = next(out.glob("results_*.json"))
    results = json.loads(results_file.read_text())
    results["results"]["emt_digits"]["acc,none"] = flip / len(lines)
    results_file.write_text(json.dumps(results))
    return out


def test_card_metadata_and_forgetting(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    base = make_run_folder(tmp_path / "base", {"method": "build-base", "base_model": "parts"})
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
    folder = make_run_folder(tmp_path / "ft", {
        "method": "lora", "base_model": str(base), "settings": {"keep_adapter": True},
        "load_with": f"hf-multimodal: --model_args pretrained={base},peft=<this folder>",
        "data": {"train": "emt:digits", "rehearsal": ["emt:mnist"]}, "command": "emtbench finetune --method lora",
    })  # fmt: skip
    model_results = shifted_results(tmp_path, "model-results", flip=3)
    assert (
        run_emtbench("card", str(folder), "--results", str(model_results), "--base-results", str(LM_EVAL_RUN))
        == 0
    )
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the local base records
    assert data["library_name"] == "peft" and data["pipeline_tag"] == "image-text-to-text"
    assert data["license"] == "apache-2.0" and data["datasets"] == ["ylecun/mnist"]
    assert {"emtbench", "lora"} <= set(data["tags"])
    assert card.content.splitlines()[card.content.splitlines().index("---", 1) + 2] == "# ft"
    assert str(tmp_path) not in card.content.split("## How it was made")[0]
    assert "emtbench finetune --method lora" in card.content
    index = {(r.dataset_name, r.metric_type): r for r in card.data.eval_results}
    assert index[("emt_digits", "accuracy")].metric_value == 50.0
    assert index[("emt_digits", "emtbench/delta")].metric_value == -50.0  # gained, not forgotten
    low, high = index[("emt_digits", "accuracy")].metric_args["ci95"]
    assert 0 <= low < 50 < high <= 100
    assert index[("EMT suite", "emtbench/h-score")].metric_value == 0.0  # fashion_mnist (original) at 0%
    assert "| emt_digits (target) | 50.0 |" in card.content
    # regenerating without --results keeps the summary
    assert run_emtbench("card", str(folder), "--name", "me/ft") == 0
    again = ModelCard.load(folder / "README.md")
    assert again.data.model_name == "me/ft" and len(again.data.eval_results) == len(card.data.eval_results)


def test_card_validates_and_push_round_trip(fake_hub, tmp_path, capsys, monkeypatch):
    from huggingface_hub import HfApi, ModelCard, snapshot_download

    folder = make_run_folder(
        tmp_path / "merged", {"method": "dare", "base_model": "llava-hf/llava-1.5-7b-hf"}
    )
    (folder / "model.safetensors").write_bytes(b"\0" * 1000)
    assert run_emtbench("push", str(folder), "emt-user/merged") == 0
    assert "pushed" in capsys.readouterr().out
    card = ModelCard.load("emt-user/merged")  # through hf_hub_download
    assert card.data.base_model == "llava-hf/llava-1.5-7b-hf" and card.data.model_name == "emt-user/merged"
    assert json.loads((folder / "emtbench_run.json").read_text())["hub_id"] == "emt-user/merged"
    assert ("POST", "/api/validate-yaml") in fake_hub.requests
    snap = Path(snapshot_download("emt-user/merged"))
    assert (snap / "model.safetensors").read_bytes() == b"\0" * 1000
    assert HfApi().model_info("emt-user/merged").card_data["pipeline_tag"] == "image-text-to-text"
    # retry is safe; a PR from someone who cannot write
    assert run_emtbench("push", str(folder), "emt-user/merged") == 0
    from emtbench.testing.fake_hub import OTHER_TOKEN

    capsys.readouterr()
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)
    assert run_emtbench("push", str(folder), "emt-user/merged") == 2
    assert "cannot create repos under 'emt-user'" in capsys.readouterr().err
    assert run_emtbench("push", str(folder), "emt-user/merged", "--create-pr") == 0
    assert [pr.author for pr in fake_hub.pull_requests("emt-user/merged")] == ["emt-outsider"]
    # no token anywhere: not in the folder, not on the Hub, not in a login file
    for token in (fake_hub.token, OTHER_TOKEN):
        assert token.encode() not in fake_hub.all_stored_bytes()
        assert all(token.encode() not in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert not (tmp_path / "hf-home" / "token").exists()


def test_bad_card_is_refused_before_upload(fake_hub, tmp_path, capsys):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("---\nlicense: my-own-license\n---\n# plain\n")
    assert run_emtbench("push", str(folder), "emt-user/plain") == 2
    err = capsys.readouterr().err
    assert "the Hub rejects the model card" in err and "license" in err
    assert ("model", "emt-user/plain") not in fake_hub.repos


@pytest.mark.parametrize("token", ["", "hf_not_a_real_token"])
def test_bad_token_fails_before_work(fake_hub, tmp_path, monkeypatch, capsys, token, tiny_llava_dir):
    monkeypatch.setenv("HF_TOKEN", token) if token else monkeypatch.delenv("HF_TOKEN")
    folder = make_run_folder(tmp_path / "m", {"method": "dare", "base_model": "x/y"})
    assert run_emtbench("push", str(folder), "emt-user/m") == 2
    err = capsys.readouterr().err
    assert "HF_TOKEN" in err and "hf auth login" in err and "Traceback" not in err
    out = tmp_path / "ft"
    code = run_emtbench(
        "finetune", "--model", str(tiny_llava_dir), "--method", "full", "--data", "emt:digits",
        "--max-steps", "1", "--output", str(out), "--push-to-hub", "emt-user/ft",
    )  # fmt: skip
    assert code == 2 and not out.exists()
    assert "hf auth login" in capsys.readouterr().err
    assert not [r for r in fake_hub.requests if r[0] == "POST"]


def test_push_to_other_namespace_is_refused_early(fake_hub, tmp_path, capsys):
    folder = make_run_folder(tmp_path / "m", {"method": "dare", "base_model": "x/y"})
    assert run_emtbench("push", str(folder), "someone-else/m") == 2
    assert "cannot create repos under 'someone-else'" in capsys.readouterr().err


def spy_on_checkpoint_opening(monkeypatch) -> list:
    """A list that records each call merge/tailor make to open their checkpoints (the real call still runs)."""
    import emtbench.methods.fusion.checkpoints as checkpoints

    opened = []
    real_check = checkpoints.check_compatible
    monkeypatch.setattr(
        checkpoints, "check_compatible", lambda *a, **k: opened.append(a) or real_check(*a, **k)
    )
    return opened


MERGE_COMMANDS = {
    "merge": ["merge", "--method", "task-arithmetic"],
    "tailor": ["tailor", "--calib-data", "emt:digits", "--calib-samples", "2"],
}


@pytest.mark.parametrize("command", MERGE_COMMANDS)
@pytest.mark.parametrize(
    ("token", "repo", "expected"),
    [
        ("", "emt-user/merged", "no Hub token found"),
        ("hf_not_a_real_token", "emt-user/merged", "the Hub refused the token (401)"),
        (None, "someone-else/merged", "cannot create repos under 'someone-else'"),  # the valid token
    ],
)
def test_merge_and_tailor_check_credentials_before_merging(
    fake_hub, tmp_path, monkeypatch, capsys, tiny_llava_dir, command, token, repo, expected
):
    """`merge`/`tailor --push-to-hub` with a bad token (or a namespace it cannot write) stop with the fix
    before a checkpoint is opened: nothing is merged, nothing is written, nothing is posted to the Hub."""
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token) if token else monkeypatch.delenv("HF_TOKEN")
    opened = spy_on_checkpoint_opening(monkeypatch)
    out = tmp_path / "merged"
    code = run_emtbench(
        *MERGE_COMMANDS[command], "--pretrained", str(tiny_llava_dir), "--finetuned", str(tiny_llava_dir),
        "--output", str(out), "--no-progress", "--push-to-hub", repo,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and "Traceback" not in err
    assert ("hf auth login" in err) if token is not None else ("push to emt-user/merged" in err)
    assert opened == [] and not out.exists()
    assert [r for r in fake_hub.requests if r[0] != "GET"] == []
    assert fake_hub.repos == {}


def test_merge_push_to_hub_with_a_good_token_reaches_the_merge(
    fake_hub, tmp_path, monkeypatch, capsys, tiny_llava_dir
):
    """The control for the test above: with the valid token the same command gets past the credential check
    to the checkpoints (the spy sees them opened; with --finetuned = --pretrained the merge then refuses an
    empty task vector, which is all this needs)."""
    opened = spy_on_checkpoint_opening(monkeypatch)
    out = tmp_path / "merged"
    code = run_emtbench(
        *MERGE_COMMANDS["merge"], "--pretrained", str(tiny_llava_dir), "--finetuned", str(tiny_llava_dir),
        "--output", str(out), "--no-progress", "--push-to-hub", "emt-user/merged",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(opened) == 1
    assert "no selected parameter differs" in err and "hf auth login" not in err


def test_unreachable_hub_is_a_named_error(fake_hub, tmp_path, monkeypatch, capsys):
    """Connection refused (no Hub at HF_ENDPOINT) is a named error with the fix, not a traceback."""
    import huggingface_hub.constants as constants

    folder = make_run_folder(tmp_path / "m", {"method": "dare", "base_model": "x/y"})
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    assert run_emtbench("push", str(folder), "emt-user/m") == 2
    err = capsys.readouterr().err
    assert "cannot reach the Hub at http://127.0.0.1:9" in err and "HF_ENDPOINT" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("status", "fix"),
    [
        (401, "hf auth login"),
        (403, "pull request"),
        (412, "retry"),
        (429, "wait and retry"),
        (503, "retry later"),
    ],
)
def test_hub_error_names_the_fix_and_the_retry(status, fix):
    """The one mapping (emtbench.hub.calls.hub_error) for every HTTP status push/publish/submit meet."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from emtbench.hub.calls import hub_error

    response = httpx2.Response(status, request=httpx2.Request("POST", "http://127.0.0.1/api/x"))
    named = hub_error(HfHubHTTPError("boom", response=response), "pushing out/", "me/m", retry="RETRY-HINT")
    assert f"pushing out/: the Hub answered {status}" in str(named) and fix in str(named)
    assert ("RETRY-HINT" in str(named)) == (status in (412, 429, 503))


def test_the_command_a_card_records_carries_no_url_credentials():
    from emtbench.hub.cards import command_line

    record = {
        "command": "emtbench eval --metadata judge_base_url=https://me:pw@judge.example/v1?api_key=sk-123"
    }
    shown = command_line(record)
    assert "pw@" not in shown and "sk-123" not in shown and "judge.example" in shown
