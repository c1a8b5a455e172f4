"""``model-tailor`` (Zhu et al. 2024): keep a sparse, compensated patch of fine-tuned weights per linear layer.

The per-layer algorithm is :mod:`emtbench.methods.fusion.tailor` (plain tensors), the layer-by-layer
driver through a real model :mod:`emtbench.methods.fusion.driver`; this module puts them behind the
merge-method interface, so ``emtbench tailor`` and ``emtbench merge --method model-tailor`` are one path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from emtbench.core.errors import EmtbenchError
from emtbench.core.options import option
from emtbench.methods.fusion.base import FusionJob, MergeMethod, register_merge_method

ScoreMode = Literal["paper", "released"]
SCORE_MODES: tuple[str, ...] = ("paper", "released")


@dataclass(frozen=True)
class TailorConfig:
    """The knobs of Model Tailor; defaults follow the released code (10% patch, ω = 0.8)."""

    patch: float = option(0.1, help="share of each block kept fine-tuned")
    """Share of each block's weights kept fine-tuned (1 − ρ in the paper's notation)."""
    omega: float = option(0.8, help="salience weight in the score")
    """Weight of salience against sensitivity in the fused score."""
    blocksize: int = option(128, help="columns per block")
    damp: float = option(0.01, help="Hessian damping, share of mean diagonal")
    """Damping added to H's diagonal, as a share of its mean diagonal."""
    score: ScoreMode = option(
        "released",
        choices=("paper", "released"),
        help="score normalisation: paper = min-max, released = per-row z-score (default)",
    )
    """``paper``: min-max normalisation; ``released``: per-row z-score inside the block."""

    def check(self) -> None:
        """Reject settings that would make the result meaningless, before any work is done."""
        if not 0.0 <= self.patch <= 1.0:
            raise EmtbenchError(
                f"patch must be in [0, 1], got {self.patch}",
                where="--patch",
                fix="the share of fine-tuned weights kept per block, e.g. --patch 0.1 (the paper's 10%)",
            )
        if not 0.0 <= self.omega <= 1.0:
            raise EmtbenchError(
                f"omega must be in [0, 1], got {self.omega}",
                where="--omega",
                fix="weight of salience vs. sensitivity, e.g. --omega 0.8",
            )
        if self.blocksize < 1:
            raise EmtbenchError(f"blocksize must be positive, got {self.blocksize}", where="--blocksize")
        if not self.damp > 0.0:
            raise EmtbenchError(
                f"damp must be positive, got {self.damp}",
                where="--damp",
                fix="e.g. --damp 0.01 (1% of the mean Hessian diagonal)",
            )
        if self.score not in SCORE_MODES:
            raise EmtbenchError(
                f"score must be one of {', '.join(SCORE_MODES)}, got {self.score!r}", where="--score"
            )


@register_merge_method()
class ModelTailor(MergeMethod):
    name = "model-tailor"
    summary = (
        "Model Tailor: a sparse patch of fine-tuned weights per layer, OBS-compensated on calibration data"
    )
    parameters_class = TailorConfig
    needs_calibration = True

    def record_name(self, finetuned_count: int) -> str:
        return "model-tailor" if finetuned_count == 1 else "model-tailor-multitask"

    def run_settings(self, parameters: Any) -> dict[str, Any]:
        return {
            "patch": parameters.patch,
            "omega": parameters.omega,
            "blocksize": parameters.blocksize,
            "damp": parameters.damp,
            "score": parameters.score,
            "compensation": "obs (subtract)",
        }

    def fuse(self, job: FusionJob, parameters: Any) -> dict[str, dict[str, Any]]:
        from emtbench.methods.fusion.driver import tailor_model

        reports = tailor_model(
            job.model, job.finetuned, job.calibration, parameters, layers=job.layers, progress=job.progress
        )
        return {
            report.name: {"status": report.status, "changed_share": report.changed_share}
            for report in reports
        }
