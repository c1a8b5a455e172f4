"""The Hub leaderboard loop over real HTTP: the real huggingface_hub client against the fake Hub.

publish → a static Space holding the page; submit RESULTS → a pull request with the files; submit
--model → a request, which the worker evaluates (a tiny model pushed to the fake Hub) into the results
dataset; a manifest of hf:// entries builds a leaderboard.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from conftest import run_emtbench

from emtbench.core.errors import EmtbenchError
from emtbench.testing.leaderboard import BASE_ACCURACY, STAMP, write_demo_manifest, write_results


def _front_matter(text: str) -> dict:
    import yaml

    assert text.startswith("---\n"), text[:80]
    return yaml.safe_load(text.split("---\n", 2)[1])


def _commits_posted(hub) -> int:
    return sum(1 for method, path in hub.requests if method == "POST" and "/commit/" in path)


# --- hf:// paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hf://datasets/u/r/a/b.json", ("dataset", "u/r", None, "a/b.json")),
        ("hf://datasets/u/r@v1.0/a/", ("dataset", "u/r", "v1.0", "a")),
        ("hf://u/model", ("model", "u/model", None, "")),
        ("hf://models/u/model/emtbench_run.json", ("model", "u/model", None, "emtbench_run.json")),
        ("hf://spaces/u/board/index.html", ("space", "u/board", None, "index.html")),
    ],
)
def test_hub_paths_parse(value, expected):
    from emtbench.hub.download import parse_hub_path

    parsed = parse_hub_path(value)
    assert (parsed.repo_type, parsed.repo_id, parsed.revision, parsed.path) == expected
    assert str(parsed).rstrip("/") == value.rstrip("/").replace("hf://models/", "hf://")


@pytest.mark.parametrize("value", ["hf://datasets/only", "hf://u/r/../../etc/passwd", "hf://u/r@/x", "/u/r"])
def test_bad_hub_paths_are_named_errors(value):
    from emtbench.hub.download import parse_hub_path

    with pytest.raises(EmtbenchError, match="hf://"):
        parse_hub_path(value)


# --- publish -----------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path) -> Path:
    from emtbench.leaderboard.site import build_leaderboard

    manifest = write_demo_manifest(tmp_path / "board")
    out = tmp_path / "site"
    build_leaderboard(manifest, out, progress=False)
    return out


def test_publish_uploads_the_page_as_a_static_space(fake_hub, site, capsys):
    repo_id = f"{fake_hub.user}/emt-board"
    assert run_emtbench("leaderboard", "publish", str(site), "--repo-id", repo_id) == 0
    assert repo_id in capsys.readouterr().out
    repo = fake_hub.repo(repo_id, "space")
    assert repo.sdk == "static"
    files = fake_hub.files(repo_id, "space")
    for name in ("index.html", "leaderboard.json", "leaderboard.csv"):
        assert files[name] == (site / name).read_bytes()
    front = _front_matter(files["README.md"].decode())
    assert front["sdk"] == "static" and front["app_file"] == "index.html"
    assert front["title"] == "emtbench demo leaderboard"
    # The fake Hub serves a static Space's index.html, as the Hub does.
    with urllib.request.urlopen(f"{fake_hub.endpoint}/spaces/{repo_id}") as response:
        assert response.read() == (site / "index.html").read_bytes()
    # Publishing again updates the same Space; an unchanged page makes no new commit.
    assert run_emtbench("leaderboard", "publish", str(site), "--repo-id", repo_id) == 0
    assert len(fake_hub.repo(repo_id, "space").commits) == 2  # initial + one publish
    (site / "leaderboard.csv").write_text("changed\n")
    assert run_emtbench("leaderboard", "publish", str(site), "--repo-id", repo_id) == 0
    assert fake_hub.read(repo_id, "leaderboard.csv", "space") == b"changed\n"


def test_publish_checks_the_token_before_anything(fake_hub, site, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token_at_all_00000000")
    assert run_emtbench("leaderboard", "publish", str(site), "--repo-id", "emt-user/x") == 2
    err = capsys.readouterr().err
    assert "refused the token (401)" in err and "hf auth login" in err
    assert ("space", "emt-user/x") not in fake_hub.repos


def test_publish_into_another_namespace_names_the_fix(fake_hub, site, monkeypatch):
    from emtbench.leaderboard.publish import publish_leaderboard
    from emtbench.testing.fake_hub import OTHER_TOKEN

    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)
    with pytest.raises(EmtbenchError, match="answered 403") as caught:
        publish_leaderboard(site, "emt-user/board")
    assert "write access" in str(caught.value) and "emt-user/board" in str(caught.value)


def test_publish_refuses_a_folder_without_a_page(fake_hub, tmp_path):
    from emtbench.leaderboard.publish import publish_leaderboard

    with pytest.raises(EmtbenchError, match=r"holds no index\.html"):
        publish_leaderboard(tmp_path, "emt-user/x")
    assert not any(method == "POST" for method, _ in fake_hub.requests)


def test_publish_into_a_gradio_space_is_refused(fake_hub, site):
    from emtbench.leaderboard.publish import publish_leaderboard

    fake_hub.create_repo("emt-user/app", "space", sdk="gradio")
    with pytest.raises(EmtbenchError, match="'gradio' SDK"):
        publish_leaderboard(site, "emt-user/app")


# --- submit results ----------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path) -> Path:
    folder = tmp_path / "results" / "tiny-lora"
    write_results(folder, BASE_ACCURACY | {"emt_digits": 90.0}, model_name="tiny-lora", samples=20)
    (folder / "emtbench_run.json").write_text(json.dumps({"method": "lora", "base_model": "emt-user/base"}))
    return tmp_path / "results"


def test_submit_results_opens_a_pull_request_with_the_files(fake_hub, run_dir, monkeypatch, capsys):
    from emtbench.testing.fake_hub import OTHER_TOKEN

    fake_hub.create_repo("emt-user/results", "dataset")
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)  # an outsider, who cannot write to the dataset
    assert run_emtbench("submit", str(run_dir), "--to", "emt-user/results", "--base", "base-7b") == 0
    assert "opened pull request" in capsys.readouterr().out
    (pr,) = fake_hub.pull_requests("emt-user/results", "dataset")
    assert pr.author == "emt-outsider" and pr.status == "open"
    files = fake_hub.files("emt-user/results", "dataset", revision=f"refs/pr/{pr.num}")
    folder = f"tiny-lora/{STAMP.replace(':', '-')}"
    local = run_dir / "tiny-lora"
    assert files[f"{folder}/results_{STAMP}.json"] == (local / f"results_{STAMP}.json").read_bytes()
    for task in BASE_ACCURACY:
        name = f"samples_{task}_{STAMP}.jsonl"
        assert files[f"{folder}/{name}"] == (local / name).read_bytes()
    assert json.loads(files[f"{folder}/emtbench_run.json"])["method"] == "lora"
    submission = json.loads(files[f"{folder}/submission.json"])
    assert submission["submitter"] == "emt-outsider"
    assert submission["manifest_entry"] == {
        "name": "tiny-lora",
        "results": f"hf://datasets/emt-user/results/{folder}/",
        "method": "lora",
        "run_record": f"hf://datasets/emt-user/results/{folder}/emtbench_run.json",
        "base": "base-7b",
    }
    assert set(fake_hub.files("emt-user/results", "dataset")) == {".gitattributes"}  # main untouched


def test_submit_refuses_mismatched_samples_before_any_upload(fake_hub, run_dir, capsys):
    fake_hub.create_repo("emt-user/results", "dataset")
    samples = run_dir / "tiny-lora" / f"samples_emt_digits_{STAMP}.jsonl"
    lines = samples.read_text().splitlines()
    samples.write_text("\n".join(line.replace('"acc": 1.0', '"acc": 0.0') for line in lines) + "\n")
    assert run_emtbench("submit", str(run_dir), "--to", "emt-user/results") == 2
    assert "samples average" in capsys.readouterr().err
    assert _commits_posted(fake_hub) == 0 and not fake_hub.pull_requests("emt-user/results", "dataset")


def test_submit_refuses_a_results_file_that_is_not_one(fake_hub, tmp_path, capsys):
    (tmp_path / "results_x.json").write_text('{"results": {"emt_digits": {"acc,none": NaN}}}')
    assert run_emtbench("submit", str(tmp_path), "--to", "emt-user/results") == 2
    assert "NaN" in capsys.readouterr().err
    assert not fake_hub.requests  # not even the token was asked for


def test_submit_to_a_missing_dataset_names_the_fix(fake_hub, run_dir):
    from emtbench.leaderboard.submissions import submit_results

    with pytest.raises(EmtbenchError, match="no such repo") as caught:
        submit_results(run_dir, "emt-user/nowhere")
    assert "emt-user/nowhere" in str(caught.value)


# --- requests and the worker -------------------------------------------------------------------


def _push(folder: Path, repo_id: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder))


def test_a_request_by_an_outsider_is_a_pull_request(fake_hub, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from emtbench.leaderboard.submissions import submit_request
    from emtbench.testing.fake_hub import OTHER_TOKEN

    fake_hub.create_repo("emt-user/requests", "dataset")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llava"}')
    (model / "model.safetensors").write_bytes(b"not read by the request")
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)
    _push(model, "emt-outsider/my-model")
    filed = submit_request("emt-outsider/my-model", "emt-user/requests", base="emt-outsider/my-model")
    assert filed.pr_url is not None
    (pr,) = fake_hub.pull_requests("emt-user/requests", "dataset")
    sha = HfApi().model_info("emt-outsider/my-model").sha
    request = json.loads(
        fake_hub.read("emt-user/requests", filed.path_in_repo, "dataset", revision=f"refs/pr/{pr.num}")
    )
    assert request["status"] == "PENDING" and request["sha"] == sha and request["tasks"] == ["emt_offline"]
    assert filed.path_in_repo == f"emt-outsider/my-model_eval_request_{sha[:12]}.json"


def test_a_request_for_a_repo_without_safetensors_is_refused(fake_hub, tmp_path):
    from emtbench.leaderboard.submissions import submit_request

    fake_hub.create_repo("emt-user/requests", "dataset")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"a pickle")
    _push(model, "emt-user/pickled")
    with pytest.raises(EmtbenchError, match=r"no \*\.safetensors"):
        submit_request("emt-user/pickled", "emt-user/requests")
    assert set(fake_hub.files("emt-user/requests", "dataset")) == {".gitattributes"}


def test_the_worker_marks_a_request_it_cannot_run_failed(fake_hub, capsys):
    from huggingface_hub import CommitOperationAdd, HfApi

    for name in ("requests", "results"):
        fake_hub.create_repo(f"emt-user/{name}", "dataset")
    request = {"model": "emt-user/gone", "sha": "0" * 40, "tasks": ["emt_offline"], "status": "PENDING"}
    HfApi().create_commit(
        "emt-user/requests",
        [CommitOperationAdd("emt-user/gone_eval_request.json", json.dumps(request).encode())],
        repo_type="dataset",
        commit_message="a request for a model that does not exist",
    )
    code = run_emtbench(
        "leaderboard", "worker", "--requests", "emt-user/requests", "--results", "emt-user/results", "--once"
    )
    assert code == 1
    assert "FAILED" in capsys.readouterr().out
    final = json.loads(fake_hub.read("emt-user/requests", "emt-user/gone_eval_request.json", "dataset"))
    assert final["status"] == "FAILED" and "no such repo" in final["error"]
    # RUNNING was committed before FAILED
    titles = [c.title for c in fake_hub.repo("emt-user/requests", "dataset").commits.values()]
    assert "Evaluating emt-user/gone" in titles and "FAILED: emt-user/gone" in titles


def test_the_worker_needs_write_access(fake_hub, monkeypatch):
    from emtbench.leaderboard.worker import run_worker
    from emtbench.testing.fake_hub import OTHER_TOKEN

    for name in ("requests", "results"):
        fake_hub.create_repo(f"emt-user/{name}", "dataset")
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)
    with pytest.raises(EmtbenchError, match="cannot write to emt-user/requests"):
        run_worker(requests="emt-user/requests", results="emt-user/results", once=True)


@pytest.mark.slow
def test_request_worker_results_leaderboard_space(fake_hub, tmp_path, capsys):
    """The whole loop: push base + fine-tuned, request, worker, build from hf://, publish."""
    from emtbench.testing.models import build_tiny_llava

    for name in ("requests", "results"):
        fake_hub.create_repo(f"emt-user/{name}", "dataset")
    base = build_tiny_llava(tmp_path / "base", seed=0)
    tuned = build_tiny_llava(tmp_path / "tuned", seed=1)
    (tuned / "emtbench_run.json").write_text(
        json.dumps({"method": "lora", "base_model": "emt-user/tiny-base"})
    )
    (tuned / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    _push(base, "emt-user/tiny-base")
    _push(tuned, "emt-user/tiny-tuned")

    assert run_emtbench("submit", "--model", "emt-user/tiny-tuned", "--to", "emt-user/requests") == 0
    assert "base emt-user/tiny-base" in capsys.readouterr().out  # the base the checkpoint records
    code = run_emtbench(
        "leaderboard", "worker", "--requests", "emt-user/requests", "--results", "emt-user/results",
        "--once", "--limit", "4", "--device", "cpu", "--batch-size", "4",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FINISHED emt-user/tiny-tuned" in out

    requests = fake_hub.files("emt-user/requests", "dataset")
    (path,) = [name for name in requests if name.endswith(".json")]
    final = json.loads(requests[path])
    assert final["status"] == "FINISHED", final
    assert set(final["accuracy"]) >= {"emt_digits", "emt_fashion_mnist"}
    results = fake_hub.files("emt-user/results", "dataset")
    sha = final["sha"][:12]
    assert any(name.startswith(f"emt-user__tiny-tuned/{sha}/results_") for name in results)
    assert any(
        name.startswith(f"emt-user__tiny-base/{final['base_sha'][:12]}/samples_emt_digits")
        for name in results
    )
    assert f"emt-user__tiny-tuned/{sha}/emtbench_run.json" in results
    # nothing executable was downloaded
    cache = Path(tmp_path / "hf-home" / "hub")
    assert not list(cache.rglob("*.py"))

    site = tmp_path / "site"
    assert run_emtbench(
        "leaderboard", "build", "hf://datasets/emt-user/results/leaderboard.yaml", "--out", str(site), "--quiet"
    ) == 0  # fmt: skip
    data = json.loads((site / "leaderboard.json").read_text())
    names = {run["name"] for run in data["runs"]}
    assert names == {f"emt-user/tiny-tuned@{sha}", f"emt-user/tiny-base@{final['base_sha'][:12]}"}
    tuned_row = next(run for run in data["runs"] if run["name"].startswith("emt-user/tiny-tuned"))
    assert tuned_row["base"].startswith("emt-user/tiny-base@") and tuned_row["method"] == "lora"
    assert run_emtbench("leaderboard", "publish", str(site), "--repo-id", "emt-user/board") == 0
    assert b"tiny-tuned" in fake_hub.read("emt-user/board", "index.html", "space")
    # a second pass finds nothing pending
    assert run_emtbench(
        "leaderboard", "worker", "--requests", "emt-user/requests", "--results", "emt-user/results", "--once"
    ) == 0  # fmt: skip
    assert "no PENDING requests" in capsys.readouterr().out


# --- manifests with hf:// entries ---------------------------------------------------------------


def test_a_manifest_of_hub_entries_builds_a_leaderboard(fake_hub, tmp_path):
    from huggingface_hub import HfApi

    from emtbench.leaderboard.site import build_leaderboard

    write_demo_manifest(tmp_path / "local")
    api = HfApi()
    api.create_repo("emt-user/results", repo_type="dataset")
    for name in ("base", "lora"):
        api.upload_folder(
            repo_id="emt-user/results", repo_type="dataset", folder_path=str(tmp_path / "local" / name),
            path_in_repo=f"runs/{name}",
        )  # fmt: skip
    api.create_repo("emt-user/lora-model")
    api.upload_file(
        repo_id="emt-user/lora-model",
        path_or_fileobj=json.dumps({"method": "lora", "parameters": {"changed_fraction": 0.05}}).encode(),
        path_in_repo="emtbench_run.json",
    )
    manifest = tmp_path / "board.yaml"
    manifest.write_text(
        json.dumps(
            {
                "groups": {"EMT": ["emt_digits", "emt_fashion_mnist"]},
                "bootstrap": {"resamples": 50},
                "runs": [
                    {"name": "base", "results": "hf://datasets/emt-user/results/runs/base/"},
                    {
                        "name": "lora",
                        "results": f"hf://datasets/emt-user/results/runs/lora/results_{STAMP}.json",
                        "base": "base",
                        "method": "lora",
                        "target_tasks": ["emt_digits"],
                        "run_record": "hf://emt-user/lora-model",
                    },
                ],
            }
        )
    )
    site = build_leaderboard(manifest, tmp_path / "site", progress=False)
    assert site.runs == 2
    data = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    lora = next(run for run in data["runs"] if run["name"] == "lora")
    assert lora["params_changed"] == pytest.approx(0.05)
    assert lora["accuracy"]["emt_digits"] == pytest.approx(96.0)  # 95% of 50 samples, rounded to 48
    base = next(run for run in data["runs"] if run["name"] == "base")
    assert base["accuracy_ci"]["emt_digits"], "the folder download brings the samples along: intervals"


def test_a_missing_hub_entry_is_a_listed_problem(fake_hub, tmp_path):
    from emtbench.leaderboard.site import build_leaderboard

    fake_hub.create_repo("emt-user/results", "dataset")
    write_results(tmp_path / "base", BASE_ACCURACY)
    manifest = tmp_path / "board.yaml"
    manifest.write_text(
        json.dumps(
            {
                "runs": [
                    {"name": "base", "results": "base"},
                    {"name": "gone", "results": "hf://datasets/emt-user/results/nothing/here/"},
                    {"name": "no-repo", "results": "hf://datasets/emt-user/absent/x.json"},
                ]
            }
        )
    )
    with pytest.raises(EmtbenchError) as caught:
        build_leaderboard(manifest, tmp_path / "site", progress=False)
    message = str(caught.value)
    assert "2 problem(s)" in message
    assert "holds no file or folder 'nothing/here'" in message and "no such repo" in message
