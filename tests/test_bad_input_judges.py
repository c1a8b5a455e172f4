"""Bad input for the judges: faulty endpoints, options of the wrong type, credentials in URLs.

The endpoint is a real HTTP server on 127.0.0.1 (tests/openai_server.py) with fault modes; nothing
in the openai client is patched.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from bad_input import expect_handled, expect_refusal
from openai_server import FAULTS, OpenAIServer, Reply

from emtbench.datasets.emt import CIFAR10_LABELS
from emtbench.judges import JudgeItem, Verdict, make_judge
from emtbench.judges.base import scores

SECRET = "sk-bad-input-SECRET-42"
AREA_REPLIES = "judge replies"
AREA_OPTIONS = "judge options / --metadata"
AREA_SECRETS = "secrets"
COVERAGE_METRIC = "judge_coverage"  # the metric emtbench reports beside acc


@pytest.fixture(scope="module")
def server():
    with OpenAIServer(hang_seconds=2.0) as running:
        yield running


@pytest.fixture
def api(server, monkeypatch, tmp_path):
    server.reset(default="yes")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    def build(**options):
        settings = {
            "judge": "llm",
            "judge_model": "judge-test",
            "judge_base_url": server.base_url,
            "judge_backoff": 0.0,
            "judge_cache": "none",
            **options,
        }
        return make_judge(settings)

    return build


def cat(answer: str = "a cat") -> JudgeItem:
    return JudgeItem(answer, "cat", CIFAR10_LABELS)


FAULT_REPLIES = [
    *FAULTS,
    Reply(429),
    Reply(503, b"<html>busy</html>", {"Content-Type": "text/html"}),
    Reply(200, {"choices": [{"message": {"content": 5}}]}),
    Reply(200, {"choices": "yes"}),
    Reply(200, b""),
    Reply(200, b'{"choices": [{"message": {"content": "yes"}}], "id": NaN}'),
    Reply(200, b"\xff\xfe not utf-8"),
    "hang",
]


@pytest.mark.parametrize("fault", FAULT_REPLIES, ids=repr)
def test_a_fault_on_every_attempt_is_judge_error_and_the_run_goes_on(server, api, fault):
    """Each malformed reply is a failed attempt, retried, then judge_error: never an exception."""
    judge = api(judge_max_attempts=2, judge_timeout=0.5)
    server.default = fault

    def case() -> bool:
        judgements = judge.judge([cat("a cat"), cat("a dog")])
        return [j.verdict for j in judgements] == [Verdict.JUDGE_ERROR] * 2 and len(server.requests) == 4

    expect_handled(AREA_REPLIES, f"every attempt: {fault!r}", case)


@pytest.mark.parametrize("fault", FAULT_REPLIES, ids=repr)
def test_a_fault_then_a_good_reply_is_retried_to_a_verdict(server, api, fault):
    judge = api(judge_max_attempts=3, judge_timeout=0.5)
    server.script(fault)

    def case() -> bool:
        return judge.judge_one(cat()).verdict is Verdict.CORRECT and len(server.requests) == 2

    expect_handled(AREA_REPLIES, f"once, then yes: {fault!r}", case)


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "1"},
        {"retry-after-ms": "1000"},
        {"Retry-After": "HTTP-DATE"},  # filled in when the test runs: a date two seconds ahead
    ],
    ids=["seconds", "milliseconds", "http-date"],
)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(server, api, status, headers):
    """The issue saw a retry 0.11 s after a server asked for 1 s."""
    if headers.get("Retry-After") == "HTTP-DATE":
        when = datetime.now(timezone.utc) + timedelta(seconds=2)
        headers = {"Retry-After": format_datetime(when, usegmt=True)}
    server.script(Reply(status, {"error": {"message": "busy"}}, headers))
    judge = api(judge_backoff=0.01)

    def case() -> bool:
        verdict = judge.judge_one(cat()).verdict
        first, second = server.requests
        return verdict is Verdict.CORRECT and second.time - first.time >= 0.95

    expect_handled(AREA_REPLIES, f"{status} with {sorted(headers)}", case)


def test_a_judge_outage_never_looks_like_forgetting(server, api):
    """acc is accuracy over judged answers; judge_coverage says how many were judged."""
    # The mixed run: 9 answers judged (5 right) and 3 judge errors.
    answers = [f"a cat, take {i}" for i in range(5)] + [f"a dog, take {i}" for i in range(4)]
    failing = [f"a frog, take {i}" for i in range(3)]
    server.responder = lambda body: (
        500
        if "Prediction: a frog" in json.dumps(body)
        else ("yes" if "Prediction: a cat" in json.dumps(body) else "no")
    )
    judge = api(judge_max_attempts=2)

    def case() -> bool:
        per_sample = [scores(j) for j in judge.judge([cat(a) for a in answers + failing])]
        # lm-eval averages a metric over the documents that report it.
        acc = [s["acc"] for s in per_sample if "acc" in s]
        coverage = [s.get(COVERAGE_METRIC) for s in per_sample]
        return (
            sum(acc) / len(acc) == pytest.approx(5 / 9)
            and sum(coverage) / len(coverage) == pytest.approx(9 / 12)
            and sum(s["judge_error"] for s in per_sample) == 3
        )

    expect_handled(AREA_REPLIES, "mixed run: 5 of 9 judged right, 3 errors", case)


def test_a_judge_that_is_down_reports_no_accuracy_at_all(monkeypatch, tmp_path):
    with OpenAIServer() as gone:
        url = gone.base_url
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    judge = make_judge(
        {
            "judge": "llm",
            "judge_base_url": url,
            "judge_backoff": 0,
            "judge_max_attempts": 2,
            "judge_cache": "none",
        }
    )

    def case() -> bool:
        per_sample = [scores(j) for j in judge.judge([cat("a cat"), cat("a dog")])]
        return all("acc" not in s and s.get(COVERAGE_METRIC) == 0.0 for s in per_sample)

    expect_handled(AREA_REPLIES, "server down", case)


BAD_OPTIONS = [
    ("judge_concurrency", "eight"),
    ("judge_concurrency", 0),
    ("judge_concurrency", True),
    ("judge_concurrency", 2.5),
    ("judge_max_attempts", -1),
    ("judge_max_attempts", [3]),
    ("judge_timeout", "soon"),
    ("judge_timeout", 0),
    ("judge_timeout", {"s": 1}),
    ("judge_backoff", -1),
    ("judge_backoff", "NaN"),
    ("judge_model", 5),
    ("judge_model", ["gpt"]),
    ("judge_base_url", 8080),
    ("judge_base_url", "ftp://example.org/v1"),
    ("judge_base_url", "localhost:8000"),
    ("judge_api_key_env", None),
    ("judge_cache", 3),
]


@pytest.mark.parametrize(("key", "value"), BAD_OPTIONS, ids=[f"{k}={v!r}" for k, v in BAD_OPTIONS])
def test_llm_judge_options_of_the_wrong_type_are_named_errors(api, key, value):
    expect_refusal(AREA_OPTIONS, f"llm {key}={value!r}", lambda: api(**{key: value}), match=key)


@pytest.mark.parametrize(
    ("options"),
    [
        {"judge": "local_llm", "judge_batch_size": "many"},
        {"judge": "local_llm", "judge_batch_size": 0},
        {"judge": "local_llm", "judge_max_new_tokens": -2},
        {"judge": "embedding", "judge_batch_size": 1.5},
        {"judge": "embedding", "judge_embedding_backend": 3},
        {"judge": "cascade", "judge_fallback": "llm", "judge_concurrency": "x"},
        {"judge": "cascade", "judge_fallback": 7},
        {"judge": 3},
        {"judge": "gpt-judge"},
    ],
    ids=repr,
)
def test_other_judges_options_of_the_wrong_type_are_named_errors(monkeypatch, options):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    expect_refusal(AREA_OPTIONS, repr(options), lambda: make_judge({"judge_cache": "none", **options}))


def test_numbers_typed_on_a_command_line_still_work(api):
    judge = api(judge_concurrency="4", judge_timeout="2.5", judge_max_attempts=3.0)
    assert (judge.concurrency, judge.max_attempts) == (4, 3)


def test_a_password_in_the_judge_url_never_reaches_logs_or_errors(server, api, caplog):
    host = server.base_url.split("//", 1)[1]
    url = f"http://alice:hunter2-PASSWORD@{host}"
    server.default = 500

    def case() -> bool:
        judge = api(judge_base_url=url, judge_max_attempts=1)
        judge.judge_one(cat())
        return "hunter2" not in caplog.text and "hunter2" not in judge.identity

    expect_handled(AREA_SECRETS, "password in judge_base_url: logs and cache key", case)


def test_metadata_urls_reach_lm_eval_redacted_and_the_judge_gets_them_back():
    from emtbench.core.secrets import reveal_url
    from emtbench.tasks.runtime import hide_metadata_secrets

    url = "https://alice:hunter2-PASSWORD@proxy.example/v1"
    argv = ["--tasks", "emt_digits", "--metadata", json.dumps({"judge": "llm", "judge_base_url": url})]

    def case() -> bool:
        passed = hide_metadata_secrets(argv)
        given = json.loads(passed[passed.index("--metadata") + 1])
        return "hunter2" not in " ".join(passed) and reveal_url(given["judge_base_url"]) == url

    expect_handled(AREA_SECRETS, "password in judge_base_url: what lm-eval records", case)


def test_credentials_that_reach_a_results_file_another_way_are_scrubbed(tmp_path):
    import time

    from emtbench.tasks.evaluation import scrub_results_files

    started = time.time()
    results = tmp_path / "model" / "results_2026.json"
    results.parent.mkdir()
    results.write_text(
        json.dumps(
            {"config": {"model_args": "base_url=http://bob:s3cr3t-TOKEN@10.0.0.1/v1,model=x"}, "results": {}}
        )
    )

    def case() -> bool:
        scrub_results_files(tmp_path, since=started)
        text = results.read_text()
        return "s3cr3t-TOKEN" not in text and "http://***@10.0.0.1/v1" in text and json.loads(text)

    expect_handled(AREA_SECRETS, "password in --model_args: results file", case)


def test_a_verdict_cache_that_is_not_a_database_is_named(api, tmp_path):
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"not a database " * 50)
    expect_refusal(
        AREA_OPTIONS, "judge_cache is not SQLite", lambda: api(judge_cache=str(cache)), match="cache"
    )


def test_cache_rows_this_version_never_writes_are_judged_again(server, api, tmp_path):
    import sqlite3

    cache = tmp_path / "cache.sqlite"
    judge = api(judge_cache=str(cache))
    with sqlite3.connect(cache) as db:
        db.execute("INSERT INTO verdicts VALUES (?, 'cat', 'a cat', 'certainly', '')", (judge.identity,))

    def case() -> bool:
        verdict = api(judge_cache=str(cache)).judge_one(cat("a cat")).verdict
        return verdict is Verdict.CORRECT and len(server.requests) == 1

    expect_handled(AREA_REPLIES, "verdict cache row with an unknown verdict", case)
