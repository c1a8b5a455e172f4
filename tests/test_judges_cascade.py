"""Cascade judge: rule for clear cases, the LLM (a loopback oracle server) only for the rest."""

from __future__ import annotations

import pytest
from judge_examples import labelled_items, oracle_reply
from openai_server import OpenAIServer

from emtbench.judges import Verdict, make_judge
from emtbench.judges.cascade import is_clear_case
from emtbench.judges.rule import rule_judgement


@pytest.fixture
def oracle(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cascade-test")
    with OpenAIServer() as server:
        server.responder = oracle_reply
        options = {"judge_base_url": server.base_url, "judge_model": "oracle", "judge_backoff": 0.01}
        yield server, options, tmp_path


def test_cascade_calls_the_llm_less_and_agrees_where_it_decides(oracle):
    server, options, tmp_path = oracle
    labelled = labelled_items()
    items = [item for item, _ in labelled]
    truth = [correct for _, correct in labelled]

    llm = make_judge({**options, "judge": "llm", "judge_cache": str(tmp_path / "llm.sqlite")})
    llm_verdicts = llm.judge(items)
    llm_requests = len(server.requests)
    server.reset()
    server.responder = oracle_reply
    cascade = make_judge({**options, "judge": "cascade", "judge_cache": str(tmp_path / "cascade.sqlite")})
    cascade_verdicts = cascade.judge(items)

    assert [v.correct for v in llm_verdicts] == truth  # the oracle server is a perfect judge
    assert Verdict.UNPARSEABLE not in {v.verdict for v in llm_verdicts}
    assert len(server.requests) == cascade.calls < llm.calls == llm_requests
    decided_by_rule = [i for i, item in enumerate(items) if is_clear_case(item)]
    assert len(decided_by_rule) == cascade.rule_decided > 0
    for i in decided_by_rule:
        assert cascade_verdicts[i].correct == llm_verdicts[i].correct, items[i].answer
        assert cascade_verdicts[i] == rule_judgement(items[i])
    assert [v.correct for v in cascade_verdicts] == truth


def test_paper_hard_cases_go_to_the_llm():
    hard = {item.answer for item, _ in labelled_items() if not is_clear_case(item)}
    assert {"The airplane is 8.", "dog", "a picture of a fish in a tank", "cat or dog", "an oak"} <= hard
    clear = {
        "The object is a(n) cat.",
        "a street sign for st. catherine's street",
        "a small object on a white background",
        "a pine cone",
    }
    assert not clear & hard


def test_cascade_with_an_unknown_fallback_is_a_clear_error():
    from emtbench.core.errors import EmtbenchError

    with pytest.raises(EmtbenchError, match="judge_fallback"):
        make_judge({"judge": "cascade", "judge_fallback": "rule"})
