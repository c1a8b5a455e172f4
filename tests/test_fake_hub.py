"""The fake Hub answers the real huggingface_hub client over HTTP (what every Hub test stands on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _folder(tmp_path, files):
    folder = tmp_path / "upload"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_whoami_valid_and_bad_token(fake_hub):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    assert HfApi().whoami()["name"] == fake_hub.user
    with pytest.raises(HfHubHTTPError) as info:
        HfApi(token="hf_wrong").whoami()
    assert info.value.response.status_code == 401


def test_create_upload_download_snapshot(fake_hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    api = HfApi()
    url = api.create_repo("emt-user/tiny")
    assert url.repo_id == "emt-user/tiny"
    api.create_repo("emt-user/tiny", exist_ok=True)  # 409 swallowed
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("emt-user/tiny")
    assert info.value.response.status_code == 409

    folder = _folder(tmp_path, {"config.json": '{"a": 1}', "sub/weights.txt": "w" * 5000})
    info = api.upload_folder(folder_path=str(folder), repo_id="emt-user/tiny")
    assert info.oid == fake_hub.repo("emt-user/tiny").refs["main"]
    assert fake_hub.read("emt-user/tiny", "sub/weights.txt") == b"w" * 5000
    assert sorted(api.list_repo_files("emt-user/tiny")) == [
        ".gitattributes",
        "config.json",
        "sub/weights.txt",
    ]

    path = hf_hub_download("emt-user/tiny", "config.json")
    assert json.loads(Path(path).read_text()) == {"a": 1}
    snap = snapshot_download("emt-user/tiny")
    assert (tmp_path / "hf-home").as_posix() in snap
    assert (Path(snap) / "sub" / "weights.txt").read_text() == "w" * 5000

    # a second, unchanged upload commits nothing new; a changed file makes a new commit
    (folder / "config.json").write_text('{"a": 2}')
    before = fake_hub.repo("emt-user/tiny").refs["main"]
    api.upload_folder(folder_path=str(folder), repo_id="emt-user/tiny")
    assert fake_hub.repo("emt-user/tiny").refs["main"] != before
    assert fake_hub.read("emt-user/tiny", "config.json") == b'{"a": 2}'
    assert json.loads(Path(hf_hub_download("emt-user/tiny", "config.json")).read_text()) == {"a": 2}


def test_dataset_pull_request_from_outsider(fake_hub, tmp_path):
    from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    from emtbench.testing.fake_hub import OTHER_TOKEN

    owner = HfApi()
    owner.create_repo("emt-user/results", repo_type="dataset")
    outsider = HfApi(token=OTHER_TOKEN)
    op = CommitOperationAdd("runs/a.json", b'{"acc": 0.5}')
    with pytest.raises(HfHubHTTPError) as info:
        outsider.create_commit("emt-user/results", [op], commit_message="direct", repo_type="dataset")
    assert info.value.response.status_code == 403

    commit = outsider.create_commit(
        "emt-user/results", [CommitOperationAdd("runs/a.json", b'{"acc": 0.5}')],
        commit_message="Add run a", repo_type="dataset", create_pr=True,
    )  # fmt: skip
    assert commit.pr_num == 1 and commit.pr_revision == "refs/pr/1"
    assert "runs/a.json" not in fake_hub.files("emt-user/results", "dataset")
    prs = list(
        owner.get_repo_discussions("emt-user/results", repo_type="dataset", discussion_type="pull_request")
    )
    assert [(d.num, d.title, d.author, d.status) for d in prs] == [(1, "Add run a", "emt-outsider", "open")]
    path = hf_hub_download("emt-user/results", "runs/a.json", repo_type="dataset", revision="refs/pr/1")
    assert json.loads(Path(path).read_text()) == {"acc": 0.5}
    # upload_folder with create_pr goes through the same endpoints
    folder = _folder(tmp_path, {"runs/b.json": '{"acc": 0.7}'})
    pr2 = outsider.upload_folder(
        folder_path=str(folder), repo_id="emt-user/results", repo_type="dataset", create_pr=True
    )
    assert pr2.pr_num == 2

    owner.merge_pull_request("emt-user/results", 1, repo_type="dataset")
    assert fake_hub.read("emt-user/results", "runs/a.json", "dataset") == b'{"acc": 0.5}'
    details = owner.get_discussion_details("emt-user/results", 1, repo_type="dataset")
    assert details.status == "merged" and details.merge_commit_oid


def test_validate_yaml_and_card_push(fake_hub):
    from huggingface_hub import HfApi, ModelCard

    HfApi().create_repo("emt-user/carded")
    good = ModelCard("---\nlicense: mit\ntags:\n- emtbench\n---\n# Carded\n")
    good.validate()
    good.push_to_hub("emt-user/carded")
    assert b"license: mit" in fake_hub.read("emt-user/carded", "README.md")
    assert HfApi().model_info("emt-user/carded").card_data["license"] == "mit"

    with pytest.raises(ValueError, match="license"):
        ModelCard("---\nlicense: not-a-license\n---\n# x\n").validate()
    bad_index = "---\nmodel-index:\n- name: x\n  results:\n  - task: {type: t}\n    dataset: {type: d, name: d}\n    metrics:\n    - type: acc\n---\n"
    with pytest.raises(ValueError, match="value"):
        ModelCard(bad_index).validate()


def test_space_static_page_and_private_repo(fake_hub, tmp_path):
    import urllib.request

    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    from emtbench.testing.fake_hub import OTHER_TOKEN

    api = HfApi()
    api.create_repo("emt-user/board", repo_type="space", space_sdk="static")
    api.upload_file(
        path_or_fileobj=b"<h1>board</h1>",
        path_in_repo="index.html",
        repo_id="emt-user/board",
        repo_type="space",
    )
    assert api.space_info("emt-user/board").sdk == "static"
    with urllib.request.urlopen(f"{fake_hub.endpoint}/spaces/emt-user/board") as page:
        assert page.read() == b"<h1>board</h1>"

    api.create_repo("emt-user/secret", private=True)
    assert api.model_info("emt-user/secret").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=OTHER_TOKEN).model_info("emt-user/secret")


def test_foreground_server_for_shell_use(tmp_path):
    """`python -m emtbench.testing.fake_hub` prints HF_ENDPOINT and two users' tokens; another process that
    only has those environment variables pushes to it and downloads back; SIGTERM stops it cleanly."""
    import os
    import signal
    import subprocess
    import sys

    server = subprocess.Popen(
        [sys.executable, "-m", "emtbench.testing.fake_hub", "--root", str(tmp_path / "store")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        exports = {}
        while "HF_HUB_OFFLINE" not in exports:
            line = server.stdout.readline()
            assert line, server.stderr.read()
            if line.startswith("export "):
                key, value = line.split()[1].split("=", 1)
                exports[key] = value
        assert exports["HF_ENDPOINT"].startswith("http://127.0.0.1:")
        assert {exports["HF_TOKEN"], exports["OTHER_HF_TOKEN"]} == {
            "hf_fakehubtokenemtuser0000000000000", "hf_fakehubtokenoutsider000000000000",
        }  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(HF_ENDPOINT=exports["HF_ENDPOINT"], HF_TOKEN=exports["HF_TOKEN"], HF_HUB_OFFLINE="0")
        env["HF_HOME"] = str(tmp_path / "hf-home")
        script = (
            "import os\n"
            "from huggingface_hub import HfApi, hf_hub_download\n"
            "api = HfApi()\n"
            "me = api.whoami()['name']\n"
            "other = HfApi(token=os.environ['OTHER_HF_TOKEN']).whoami()['name']\n"
            "api.create_repo(me + '/shell-model')\n"
            "api.upload_file(path_or_fileobj=b'hello', path_in_repo='a.txt', repo_id=me + '/shell-model')\n"
            "print(me, other, open(hf_hub_download(me + '/shell-model', 'a.txt')).read())\n"
        )
        env["OTHER_HF_TOKEN"] = exports["OTHER_HF_TOKEN"]
        client = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.split() == ["emt-user", "emt-outsider", "hello"]
        assert list((tmp_path / "store" / "blobs").iterdir())  # --root holds the blobs
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0 and "fake Hub stopped" in out


def test_foreground_server_refuses_a_busy_port():
    import subprocess
    import sys

    from emtbench.testing.fake_hub import FakeHub

    with FakeHub() as hub:
        port = int(hub.endpoint.rsplit(":", 1)[1])
        busy = subprocess.run(
            [sys.executable, "-m", "emtbench.testing.fake_hub", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert busy.returncode == 2 and "cannot listen on 127.0.0.1:" in busy.stderr
