"""Forgetting metrics (docs/design.md §3): pure functions on accuracies in %, plus bootstrap intervals."""

from emtbench.metrics.bootstrap import (
    bootstrap_ci,
    bootstrap_statistic_ci,
    delta_ci,
    group_score_ci,
    read_sample_scores,
)
from emtbench.metrics.forgetting import (
    AccuracyMatrix,
    TailorScores,
    accuracy,
    delta,
    encoder_gap,
    group_score,
    h_score,
    harmonic_mean,
    mean,
    tailor_scores,
)

__all__ = [
    "AccuracyMatrix",
    "TailorScores",
    "accuracy",
    "bootstrap_ci",
    "bootstrap_statistic_ci",
    "delta",
    "delta_ci",
    "encoder_gap",
    "group_score",
    "group_score_ci",
    "h_score",
    "harmonic_mean",
    "mean",
    "read_sample_scores",
    "tailor_scores",
]
