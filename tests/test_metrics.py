"""Forgetting metrics against the papers' own numbers, and bootstrap intervals from real lm-eval logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emtbench.core.errors import EmtbenchError
from emtbench.metrics import (
    AccuracyMatrix,
    accuracy,
    bootstrap_ci,
    delta,
    delta_ci,
    encoder_gap,
    group_score,
    group_score_ci,
    h_score,
    harmonic_mean,
    read_sample_scores,
    tailor_scores,
)

# Model Tailor, Table 1 (InstructBLIP Vicuna-7B, target Flickr30k): 8 original tasks, target, Avg, H-score.
MODEL_TAILOR_ORIGINAL = ["coco", "nocaps_in", "nocaps_near", "nocaps_out", "okvqa", "aokvqa", "vqav2", "gqa"]
MODEL_TAILOR_TABLE_1 = {
    "zero-shot": ([143.1, 117.7, 123.5, 121.9, 58.45, 58.24, 76.66, 49.18], 82.8, 92.39, 87.87),
    "fine-tune": ([114.2, 101.9, 113.2, 112.3, 54.47, 55.30, 74.26, 47.29], 101.8, 86.08, 92.12),
    "DARE": ([114.1, 103.3, 113.5, 109.2, 58.07, 55.89, 76.65, 49.19], 101.3, 86.8, 92.43),
    "Grafting": ([127.9, 112.6, 121.5, 116.3, 53.58, 54.58, 71.90, 47.01], 97.9, 89.25, 92.78),
    "Model Tailor": ([139.8, 115.8, 124.3, 123.4, 57.63, 57.84, 76.19, 48.58], 94.4, 93.10, 93.67),
}


@pytest.mark.parametrize("method", list(MODEL_TAILOR_TABLE_1))
def test_h_score_and_avg_match_model_tailor_table_1(method):
    original, target, printed_avg, printed_h = MODEL_TAILOR_TABLE_1[method]
    scores = dict(zip(MODEL_TAILOR_ORIGINAL, original, strict=True)) | {"flickr30k": target}
    result = tailor_scores(scores, MODEL_TAILOR_ORIGINAL, ["flickr30k"])
    assert result.h_score == pytest.approx(printed_h, abs=0.01)
    assert result.average == pytest.approx(printed_avg, abs=0.01)
    assert result.target == target


def test_model_tailor_flickr30k_summary_row():
    """Model Tailor Table 3 ("After Decoration"): A_o 92.94, A_t 94.40, Avg 93.10, H 93.67."""
    original, target, _, _ = MODEL_TAILOR_TABLE_1["Model Tailor"]
    scores = dict(zip(MODEL_TAILOR_ORIGINAL, original, strict=True)) | {"flickr30k": target}
    result = tailor_scores(scores, MODEL_TAILOR_ORIGINAL, ["flickr30k"])
    assert result.original == pytest.approx(92.94, abs=0.01)
    assert result.target == pytest.approx(94.40, abs=0.01)
    assert result.h_score == pytest.approx(93.67, abs=0.01)
    assert result.average == pytest.approx(93.10, abs=0.01)
    # "Before Decoration": only the two averages are printed; H from them must match too.
    assert h_score(90.75, 93.21) == pytest.approx(91.96, abs=0.01)


def test_delta_follows_the_continual_learning_definition():
    """App. B.4: Δ_t(k) = ω_t(1) − ω_t(k), ω = harmonic mean over the group's datasets."""
    nlu = ["arc_easy", "arc_challenge", "winogrande", "wsc273"]
    before = {"arc_easy": 60.0, "arc_challenge": 30.0, "winogrande": 50.0, "wsc273": 60.0}
    after = before | {"arc_challenge": 20.0}
    # By hand: 4 / (1/60 + 1/30 + 1/50 + 1/60) = 46.1538; with 20 on ARC-C: 4 / (... + 1/20 ...) = 38.7097.
    assert group_score(before, nlu) == pytest.approx(46.1538, abs=1e-4)
    assert group_score(after, nlu) == pytest.approx(38.7097, abs=1e-4)
    assert delta(before, after, nlu) == pytest.approx(7.4442, abs=1e-4)
    # The harmonic mean is dominated by the worst dataset: the arithmetic drop would be only 2.5 points.
    assert delta(before, after, nlu) > 2.5
    # Improving after training is backward transfer: negative Δ.
    assert delta(after, before, nlu) == pytest.approx(-7.4442, abs=1e-4)


@pytest.mark.parametrize(
    ("after", "printed_delta"),
    [(24.78, 7.83), (30.92, 1.69), (29.93, 2.68), (29.78, 2.83)],  # Naive FT, LoRA, mSGM, Soft Targets
)
def test_delta_matches_continual_learning_table_3a(after, printed_delta):
    """Table 3a: NL Acc of Pythia-160M is 32.61 before LLaVA training; the NL Δ column is ω(1) − ω(k)."""
    assert delta({"nl": 32.61}, {"nl": after}, ["nl"]) == pytest.approx(printed_delta, abs=0.01)


def test_harmonic_mean_edge_cases():
    assert harmonic_mean([40.0]) == 40.0
    assert harmonic_mean([0.0, 90.0]) == 0.0  # the limit: one failed dataset sinks the group
    with pytest.raises(EmtbenchError, match="non-negative"):
        harmonic_mean([-1.0, 5.0])
    with pytest.raises(EmtbenchError, match="no accuracy for wsc273"):
        group_score({"arc_easy": 50.0}, ["arc_easy", "wsc273"])


def test_accuracy_and_encoder_gap():
    assert accuracy([1, 0, 1, 1]) == 75.0
    assert accuracy([True, False]) == 50.0
    # EMT paper Table 2, MNIST: CLIP ViT-L-14 77.36 vs LLaVA-7b 56.96 → the MLLM is 20.40 points worse.
    assert encoder_gap(56.96, 77.36) == pytest.approx(20.40, abs=1e-9)
    with pytest.raises(EmtbenchError):
        accuracy([])


def test_accuracy_matrix_bwt_and_forgetting():
    matrix = AccuracyMatrix.from_dict(
        {
            "tasks": ["vqa", "ocr", "ref"],
            "stages": ["vqa", "ocr", "ref"],
            "matrix": [[60.0, 5.0, 1.0], [50.0, 40.0, 2.0], [45.0, 42.0, 30.0]],
        }
    )
    # BWT: mean(45 − 60, 42 − 40) = −6.5; forgetting: mean(max(60, 50) − 45, max(5, 40) − 42) = mean(15, −2).
    assert matrix.backward_transfer() == pytest.approx(-6.5)
    assert matrix.forgetting() == pytest.approx(6.5)
    assert matrix.learned_at == (0, 1, 2)


def test_accuracy_matrix_maps_eval_tasks_to_stages_by_name():
    matrix = AccuracyMatrix.from_dict(
        {"tasks": ["emt_mnist", "emt_cifar10"], "stages": ["warmup", "emt_mnist", "emt_cifar10"],
         "matrix": [[10, 10], [90, 20], [70, 80]]}
    )  # fmt: skip
    assert matrix.learned_at == (1, 2)
    assert matrix.backward_transfer() == pytest.approx(-20.0)  # only mnist was learned before the last stage
    assert matrix.forgetting() == pytest.approx(20.0)
    single = AccuracyMatrix.from_dict({"tasks": ["a"], "stages": ["a"], "matrix": [[50]]})
    assert single.backward_transfer() is None and single.forgetting() is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tasks": ["a"], "stages": ["a", "b"], "matrix": [[1]]}, "1 rows for 2 stages"),
        ({"tasks": ["a", "b"], "stages": ["a"], "matrix": [[1]]}, "must hold 2 numbers"),
        ({"tasks": ["a"], "stages": ["a"], "matrix": [["x"]]}, "non-number"),
        ({"tasks": [], "stages": ["a"], "matrix": [[1]]}, "'tasks'"),
    ],
)
def test_accuracy_matrix_rejects_malformed_json(data, message):
    with pytest.raises(EmtbenchError, match=message):
        AccuracyMatrix.from_dict(data)


def test_bootstrap_interval_brackets_the_accuracy_and_is_reproducible():
    scores = np.r_[np.ones(300), np.zeros(700)]
    low, high = bootstrap_ci(scores)
    assert low < 30.0 < high
    assert 2.0 < high - low < 8.0  # binomial 95% interval at p=0.3, n=1000 is about ±2.8
    assert bootstrap_ci(scores) == (low, high)
    narrow = bootstrap_ci(np.tile(scores, 10))
    assert narrow[1] - narrow[0] < (high - low) / 2
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (100.0, 100.0)


def test_group_and_delta_intervals():
    rng = np.random.default_rng(3)
    first, second = (rng.random(400) < 0.8).astype(float), (rng.random(300) < 0.4).astype(float)
    omega = harmonic_mean([100 * first.mean(), 100 * second.mean()])
    low, high = group_score_ci([first, second])
    assert low < omega < high
    worse = (rng.random(300) < 0.2).astype(float)
    d_low, d_high = delta_ci([first, second], [first, worse])
    assert 0 < d_low < d_high  # a real drop on one dataset gives an interval above zero


def test_read_sample_scores_from_a_real_lm_eval_run(lm_eval_run: Path):
    results = json.loads(next(lm_eval_run.rglob("results_*.json")).read_text())
    for task in ("emt_digits", "emt_fashion_mnist"):
        [samples_file] = lm_eval_run.rglob(f"samples_{task}_*.jsonl")
        scores = read_sample_scores(samples_file)
        assert len(scores) == 6  # the fixture evaluates --limit 6
        assert 100 * scores.mean() == pytest.approx(100 * results["results"][task]["acc,none"])


def test_read_sample_scores_picks_a_filter_and_reports_bad_lines(tmp_path):
    path = tmp_path / "samples_t_2026.jsonl"
    lines = [{"filter": "none", "acc": 1.0}, {"filter": "strict", "acc": 0.0}, {"filter": "none", "acc": 0.0}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert read_sample_scores(path).tolist() == [1.0, 0.0]
    assert read_sample_scores(path, filter_name="strict").tolist() == [0.0]
    path.write_text('{"filter": "none", "acc": 1.0}\nnot json\n')
    with pytest.raises(EmtbenchError, match="line 2") as error:
        read_sample_scores(path)
    assert str(path) in str(error.value)
    with pytest.raises(EmtbenchError, match="cannot read"):
        read_sample_scores(tmp_path / "missing.jsonl")


def test_multinomial_bootstrap_agrees_with_scipy_resampling():
    """Counting draws per distinct score is the same bootstrap as resampling samples (scipy's way)."""
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    soft_scores = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], size=500, p=[0.3, 0.1, 0.2, 0.4])  # VQA-style
    ours = bootstrap_ci(soft_scores, resamples=4000)
    reference = scipy_stats.bootstrap(
        (soft_scores,), np.mean, n_resamples=4000, method="percentile", random_state=np.random.default_rng(1)
    ).confidence_interval
    assert ours[0] == pytest.approx(100 * reference.low, abs=0.6)
    assert ours[1] == pytest.approx(100 * reference.high, abs=0.6)
