"""The OpenAI-compatible LLM judge, over real HTTP to a scripted server on 127.0.0.1."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from conftest import read_results, run_emtbench
from openai_server import OpenAIServer

from emtbench.core.errors import EmtbenchError
from emtbench.datasets.emt import CIFAR10_LABELS, CIFAR100_LABELS
from emtbench.judges import JudgeItem, OpenAIJudge, Verdict, make_judge
from emtbench.judges.llm import JUDGE_PROMPT, parse_yes_no

SECRET = "sk-test-SECRET-0123456789"


@pytest.fixture(scope="module")
def server():
    with OpenAIServer(hang_seconds=3.0) as running:
        yield running


@pytest.fixture
def api(server, monkeypatch, tmp_path):
    """A fresh server script and a judge factory pointing at it, with a per-test cache file."""
    server.reset(default="yes")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    def build(**options) -> OpenAIJudge:
        settings = {
            "judge": "llm",
            "judge_model": "judge-test",
            "judge_base_url": server.base_url,
            "judge_backoff": 0.01,
            "judge_cache": str(tmp_path / "verdicts.sqlite"),
            **options,
        }
        return make_judge(settings)

    return build


def cifar(answer: str, label: str = "cat") -> JudgeItem:
    return JudgeItem(answer, label, CIFAR10_LABELS)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes", True), ("yes.", True), ("**No**", False), ("No, it is not.", False),
        ("The answer is yes", True), ("Correct", True), ("That is incorrect.", False),
        ("maybe", None), ("", None), ("yes or no", None), (None, None),
    ],
)  # fmt: skip
def test_yes_no_parsing(reply, expected):
    assert parse_yes_no(reply) is expected


def test_sends_the_paper_prompt_and_sampling_parameters(server, api):
    judge = api()
    [judgement] = judge.judge([JudgeItem("a fish in a tank", "aquarium_fish", CIFAR100_LABELS)])
    assert judgement.verdict is Verdict.CORRECT
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.prompt == JUDGE_PROMPT.format(label="aquarium_fish", outputs="a fish in a tank")
    assert request.prompt.startswith("Please only answer the question in yes or no.")
    body = request.body
    assert body["model"] == "judge-test"
    assert (body["temperature"], body["max_tokens"], body["top_p"]) == (0.2, 64, 1)
    assert body["frequency_penalty"] == 0 and body["presence_penalty"] == 0
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_yes_no_and_garbage_become_verdicts(server, api):
    replies = {"cat": "Yes.", "dog": "No", "cat or dog": "no", "a fluffy animal": "no", "kitten": "banana"}
    server.responder = lambda body: next(r for a, r in replies.items() if f"Prediction: {a}." in str(body))
    judgements = api().judge([cifar(answer) for answer in replies])
    verdicts = [j.verdict for j in judgements]
    assert verdicts == [
        Verdict.CORRECT,
        Verdict.WRONG,  # one label named, not the gold one
        Verdict.INTRINSIC,  # "no" + several labels named
        Verdict.EXTRINSIC,  # "no" + no label at all
        Verdict.UNPARSEABLE,  # neither yes nor no
    ]


def test_empty_answers_are_not_sent(server, api):
    judge = api()
    assert judge.judge([cifar("  "), cifar("...")])[0].verdict is Verdict.EMPTY
    assert server.requests == [] and judge.calls == 0


def test_retries_429_and_500_then_succeeds(server, api):
    server.script(429, 500, 503, "yes")
    judge = api(judge_max_attempts=5)
    assert judge.judge_one(cifar("cat")).verdict is Verdict.CORRECT
    assert len(server.requests) == 4
    assert judge.attempts == 4 and judge.errors == 0


def test_attempt_cap_records_judge_error_and_keeps_the_key_secret(server, api, caplog, tmp_path):
    server.default = 500
    judge = api(judge_max_attempts=3)
    with caplog.at_level(logging.WARNING, logger="emtbench.judges"):
        judgements = judge.judge([cifar("cat"), cifar("dog")])
    assert [j.verdict for j in judgements] == [Verdict.JUDGE_ERROR] * 2
    assert len(server.requests) == 6  # exactly 3 attempts per answer, then give up
    assert judge.errors == 2
    assert "gave up after 3 attempt" in caplog.text
    assert SECRET not in caplog.text
    # Errors are not cached: once the endpoint recovers, a rerun judges them.
    server.reset(default="yes")
    assert [j.verdict for j in api().judge([cifar("cat"), cifar("dog")])] == [Verdict.CORRECT] * 2
    assert len(server.requests) == 2
    assert SECRET.encode() not in (tmp_path / "verdicts.sqlite").read_bytes()


def test_a_hanging_endpoint_times_out_and_is_retried(server, api):
    server.script("hang", "no")
    judge = api(judge_timeout=0.3, judge_max_attempts=2)
    assert judge.judge_one(cifar("dog")).verdict is Verdict.WRONG
    assert len(server.requests) == 2


def test_a_non_retryable_status_fails_the_item_at_once(server, api):
    server.script(400)
    judge = api(judge_max_attempts=5)
    assert judge.judge_one(cifar("cat")).verdict is Verdict.JUDGE_ERROR
    assert len(server.requests) == 1


def test_a_refused_key_is_a_clear_error_without_the_key(server, api):
    server.script(401)
    with pytest.raises(EmtbenchError) as caught:
        api().judge_one(cifar("cat"))
    assert "refused" in str(caught.value) and SECRET not in str(caught.value)
    assert "judge_base_url" in str(caught.value)


def test_missing_api_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    with pytest.raises(EmtbenchError, match="MY_JUDGE_KEY"):
        make_judge({"judge": "llm", "judge_api_key_env": "MY_JUDGE_KEY", "judge_cache": "none"})


def test_concurrency_is_bounded(server, api):
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def slow_yes(body):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return "yes"

    server.responder = slow_yes
    judgements = api(judge_concurrency=3).judge([cifar(f"cat number {i}") for i in range(12)])
    assert all(j.verdict is Verdict.CORRECT for j in judgements)
    assert len(server.requests) == 12
    assert 1 <= state["peak"] <= 3


def test_cache_makes_a_rerun_free_and_dedups_answers(server, api, tmp_path):
    items = [cifar("cat"), cifar("dog"), cifar("cat"), cifar("a cat?", "dog")]
    first = api().judge(items)
    assert len(server.requests) == 3  # the repeated (label, answer) is asked once
    server.reset(default=500)  # any request now would fail: the rerun must not make one
    rerun = api()
    assert rerun.judge(items) == first
    assert server.requests == [] and rerun.calls == 0
    assert rerun.cache.hits == 3
    # A judge with another identity (model) does not reuse these verdicts.
    server.reset(default="no")
    assert api(judge_model="other").judge_one(cifar("cat")).verdict is Verdict.WRONG


@pytest.mark.slow
def test_eval_judges_all_answers_of_a_task_in_one_concurrent_batch(
    server, tiny_llava_dir, tmp_path, monkeypatch
):
    """`emtbench eval --metadata judge=llm` sends every answer over HTTP; verdicts land in results."""
    server.reset(default="yes")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    metadata = (
        f'{{"judge": "llm", "judge_base_url": "{server.base_url}", "judge_model": "judge-test",'
        f' "judge_cache": "{tmp_path / "cache.sqlite"}", "judge_concurrency": 4}}'
    )
    out = tmp_path / "out"
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tiny_llava_dir}",
        "--device", "cpu", "--tasks", "emt_digits", "--limit", "4", "--batch_size", "4",
        "--apply_chat_template", "--output_path", str(out), "--metadata", metadata, "--log_samples",
    )  # fmt: skip
    assert code == 0
    metrics = read_results(out)["results"]["emt_digits"]
    judged = [r for r in server.requests if "Label: " in r.prompt]
    assert judged, "the llm judge was never called"
    non_empty = 1 - metrics["empty,none"]
    assert metrics["acc,none"] == pytest.approx(non_empty)  # the server said yes to every answer
    assert metrics["judge_error,none"] == 0
    written = "".join(p.read_text() for p in out.rglob("*.json*"))
    assert SECRET not in written


def test_task_filter_judges_a_whole_task_in_one_batch(server, api, monkeypatch):
    """The EMT YAML's filter step judges every response at once; process_results only looks up."""
    from emtbench.tasks import runtime

    monkeypatch.setitem(runtime._JUDGES, "emt_cifar10", api(judge_concurrency=4))
    docs = [{"emt_task": "emt_cifar10", "label": 3} for _ in range(3)]
    resps = [["cat"], ["a dog"], ["cat"]]
    assert runtime.judge_responses(resps, docs) == resps  # answers pass through unchanged
    assert len(server.requests) == 2  # one request per distinct answer
    server.default = 500  # process_results must not call the judge again
    assert [runtime.process_results(d, r)["acc"] for d, r in zip(docs, resps, strict=True)] == [1.0] * 3
    assert len(server.requests) == 2


def test_a_run_that_dies_midway_keeps_what_it_judged(server, api):
    server.script("yes", "no", 401)  # the third request aborts the run
    items = [cifar("cat"), cifar("dog"), cifar("bird"), cifar("frog")]
    with pytest.raises(EmtbenchError):
        api(judge_concurrency=1).judge(items)
    server.reset(default="yes")
    rerun = api(judge_concurrency=1)
    verdicts = rerun.judge(items)
    assert rerun.cache.hits == 2 and len(server.requests) == 2  # only the unjudged two are asked
    assert [v.verdict for v in verdicts[:2]] == [Verdict.CORRECT, Verdict.WRONG]


def test_eval_refuses_a_judge_without_key_before_loading_a_model(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    metadata = '{"judge": "cascade", "judge_api_key_env": "NO_SUCH_JUDGE_KEY", "judge_cache": "none"}'
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={tmp_path / 'missing-model'}",
        "--tasks", "emt_digits", "--metadata", metadata, "--output_path", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    assert "NO_SUCH_JUDGE_KEY" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
