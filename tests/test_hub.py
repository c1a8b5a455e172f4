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
