"""Property-based bad input (hypothesis): the readers and the rule judge on inputs nobody wrote by hand.

For every generated input, a reader either returns data that satisfies its contract (finite numbers
in range, the values the text holds) or raises EmtbenchError: never another exception, never NaN.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import string
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from emtbench.core.errors import EmtbenchError
from emtbench.core.readers import parse_json, parse_yaml
from emtbench.core.safe_pickle import loads_plain_pickle
from emtbench.core.secrets import redact_text, redact_url
from emtbench.datasets.emt import DATASETS
from emtbench.judges.base import JudgeItem, Verdict
from emtbench.judges.llm import MalformedReply, completion_text, parse_yes_no
from emtbench.judges.rule import rule_judgement, tokens
from emtbench.leaderboard.manifest import load_manifest
from emtbench.leaderboard.results import read_results
from emtbench.metrics.bootstrap import read_sample_scores

EXAMPLES = int(os.environ.get("EMTBENCH_HYPOTHESIS_EXAMPLES", "150"))
"""Examples per property; raise it for a deeper search (the suite's default keeps it a few seconds)."""
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
noise = st.sampled_from(
    ['{"a": 1, "a": 2}', "NaN", "Infinity", "-Infinity", "1e999", '"\\ud800"', "[" * 80, "", "{", "tru"]
)
texts = (
    st.text(max_size=200) | noise | st.builds(lambda v, n: json.dumps(v)[:n], json_values, st.integers(0, 60))
)


def _only_named(call):
    try:
        return call()
    except EmtbenchError:
        return None


# --- strict JSON and YAML ------------------------------------------------------------------


@SETTINGS
@given(json_values)
def test_strict_json_reads_back_what_json_writes(value):
    assert parse_json(json.dumps(value), "x") == value


def _finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


@SETTINGS
@given(texts)
def test_strict_json_returns_finite_data_or_a_named_error(text):
    value = _only_named(lambda: parse_json(text, "x"))
    if value is not None:
        assert _finite(value)
        assert value == json.loads(text)


@SETTINGS
@given(
    st.text(max_size=200)
    | st.sampled_from(["a: 1\na: 2", "x: .nan", "y: !!python/name:os.system", "z: &a [*a]"])
)
def test_strict_yaml_returns_data_or_a_named_error(text):
    value = _only_named(lambda: parse_yaml(text, "x"))
    if value is not None:
        assert _finite(value)


# --- the manifest, results and samples readers ------------------------------------------------

manifest_values = st.fixed_dictionaries(
    {
        "runs": st.lists(
            st.dictionaries(
                st.sampled_from(["name", "results", "base", "method", "params_changed", "url", "x"]),
                scalars | st.lists(scalars, max_size=2),
                max_size=5,
            ),
            max_size=3,
        )
    },
    optional={
        "title": scalars,
        "bootstrap": st.dictionaries(
            st.sampled_from(["resamples", "confidence", "seed"]), scalars, max_size=3
        ),
        "min_judge_coverage": scalars,
    },
)


@SETTINGS
@given(manifest_values | json_values, st.booleans())
def test_manifest_reader_validates_or_names_the_problem(value, as_json):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "leaderboard.yaml"
        path.write_text(json.dumps(value) if as_json else _yaml_dump(value))
        manifest = _only_named(lambda: load_manifest(path))
        if manifest is not None:
            assert manifest.runs and all(run.name and run.results for run in manifest.runs)
            assert all(run.params_changed is None or 0 <= run.params_changed <= 1 for run in manifest.runs)


def _yaml_dump(value) -> str:
    import yaml

    return yaml.safe_dump(value)


@SETTINGS
@given(texts | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_manifest_reader_on_arbitrary_text(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "leaderboard.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass") if False else path.write_bytes(
            text.encode("utf-8", "surrogatepass")
        )
        _only_named(lambda: load_manifest(path))


metric_values = st.dictionaries(
    st.sampled_from(
        [
            "acc,none",
            "acc_stderr,none",
            "exact_match,none",
            "judge_coverage,none",
            "judge_error,none",
            "alias",
        ]
    ),
    scalars | st.floats(),
    max_size=4,
)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["emt_digits", "arc_easy", "emt"]), metric_values | json_values, max_size=3
    ),
    json_values,
)
def test_results_reader_gives_accuracies_in_range_or_a_named_error(results, extra):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "results_2026-01-01T00-00-00.json"
        text = json.dumps({"results": results, "groups": extra if isinstance(extra, dict) else {}})
        path.write_text(text)
        read = _only_named(lambda: read_results(path, {}))
        if read is not None:
            assert all(math.isfinite(v) and 0 <= v <= 100 for v in read.accuracy.values())
            assert all(0 <= c <= 1 for c in read.coverage.values())


sample_lines = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "doc_id": st.integers(0, 5) | st.text(max_size=3),
            "filter": st.sampled_from(["none", "strict"]) | scalars,
            "acc": scalars | st.floats(),
            "metrics": st.lists(st.sampled_from(["acc", "judge_coverage"]), max_size=2),
        },
    ).map(json.dumps)
    | texts,
    max_size=8,
)


@SETTINGS
@given(sample_lines)
def test_samples_reader_gives_scores_in_range_or_a_named_error(lines):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "samples_emt_digits_2026.jsonl"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
        scores = _only_named(lambda: read_sample_scores(path))
        if scores is not None:
            assert len(scores) > 0 and all(math.isfinite(s) and 0 <= s <= 1 for s in scores)


# --- judges --------------------------------------------------------------------------------

datasets = st.sampled_from(sorted(DATASETS))
answers = st.text(max_size=80) | st.text(alphabet=string.ascii_letters + " _-,.!?0123456789", max_size=80)


@SETTINGS
@given(datasets, answers, st.data())
def test_rule_judge_verdicts_are_consistent(name, answer, data):
    dataset = DATASETS[name]
    label = data.draw(st.sampled_from(dataset.labels))
    judgement = rule_judgement(JudgeItem(answer, label, dataset.labels, dataset.kind))
    assert set(judgement.matched) <= set(dataset.labels)
    assert (judgement.verdict is Verdict.EMPTY) == (not tokens(answer))
    if judgement.verdict is Verdict.INTRINSIC:
        assert len(judgement.matched) > 1
    if judgement.verdict in (Verdict.CORRECT, Verdict.WRONG):
        assert len(judgement.matched) == 1
        assert (judgement.matched[0] == label) == (judgement.verdict is Verdict.CORRECT)
    if judgement.verdict is Verdict.EXTRINSIC:
        assert judgement.matched == ()


@SETTINGS
@given(
    datasets,
    st.data(),
    st.sampled_from(["", " ", "  "]),
    st.sampled_from(["", ".", "!", " ."]),
    st.booleans(),
)
def test_rule_judge_the_label_itself_is_correct(name, data, before, after, upper):
    dataset = DATASETS[name]
    label = data.draw(st.sampled_from(dataset.labels))
    answer = before + (label.upper() if upper else label).replace("_", " ") + after
    assert rule_judgement(JudgeItem(answer, label, dataset.labels, dataset.kind)).verdict is Verdict.CORRECT


@SETTINGS
@given(datasets, answers, st.data())
def test_rule_judge_ignores_case_and_surrounding_punctuation(name, answer, data):
    dataset = DATASETS[name]
    label = data.draw(st.sampled_from(dataset.labels))
    plain = rule_judgement(JudgeItem(answer, label, dataset.labels, dataset.kind))
    shouted = rule_judgement(JudgeItem(f"  {answer.upper()} !", label, dataset.labels, dataset.kind))
    assume(answer.upper().lower() == answer.lower())  # some characters change length when upper-cased
    assert shouted.verdict is plain.verdict


@SETTINGS
@given(
    st.text(max_size=120)
    | st.binary(max_size=60).map(lambda b: b.decode("latin-1"))
    | json_values.map(json.dumps)
)
def test_judge_reply_parser_returns_text_or_a_malformed_reply(body):
    try:
        content = completion_text(body)
    except MalformedReply:
        return
    assert isinstance(content, str)
    assert parse_yes_no(content) in (True, False, None)


# --- pickles and secrets -------------------------------------------------------------------

plain_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=20,
)


@SETTINGS
@given(plain_data, st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_plain_data_unpickles_unchanged(value, protocol):
    data = pickle.dumps(value, protocol=protocol)
    try:
        assert loads_plain_pickle(data, "x") == value
    except EmtbenchError as error:
        # Protocols 0-2 build bytes by calling bytes() or _codecs.encode(): refused (bytes(10**12)
        # would allocate a terabyte), never called. The REFER files hold no bytes.
        assert protocol < 3 and "refused to unpickle" in str(error)
        assert "bytes" in str(error) or "_codecs" in str(error)


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_unpickle_to_data_or_a_named_error(data):
    _only_named(lambda: loads_plain_pickle(data, "x"))


secrets = st.text(alphabet=string.ascii_letters + string.digits + "-_.~!$&'()*+;=%", min_size=6, max_size=20)


@SETTINGS
@given(
    secrets,
    st.sampled_from(["http", "https"]),
    st.sampled_from(["proxy.example", "127.0.0.1:8000"]),
    st.sampled_from(["", "/v1", "/v1/chat"]),
)
def test_url_credentials_never_survive_redaction(password, scheme, host, path):
    assume(":" not in password and "@" not in password)
    assume(password not in f"error talking to {scheme}://alice:@{host}{path}?api_key=&page=2: 503")
    url = f"{scheme}://alice:{password}@{host}{path}"
    assert password not in redact_url(url)
    assert password not in redact_text(f"error talking to {url}: 503")
    encoded = quote(password, safe="")  # a query value with & or = in it is percent-encoded
    redacted = redact_url(f"{scheme}://{host}{path}?api_key={encoded}&page=2")
    assert encoded not in redacted and password not in redacted and "page=2" in redacted


@pytest.mark.parametrize("text", ["no url here", "http://plain.example/v1", "see https://a.example/x?y=1"])
def test_redaction_leaves_urls_without_credentials_alone(text):
    assert redact_text(text) == text
