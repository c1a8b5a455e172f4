"""Model Tailor's per-layer algorithm on random layers, against references written here."""

from __future__ import annotations

import pytest
import torch

from emtbench.core.errors import EmtbenchError
from emtbench.methods.fusion.tailor import (
    HessianAccumulator,
    TailorConfig,
    fuse_task_patches,
    fusion_scores,
    revert_count,
    tailor_layer,
    tailor_layer_columnwise,
)


def random_layer(
    rows: int = 12, columns: int = 40, tokens: int = 200, seed: int = 0, dtype=torch.float64, mixing_scale=1.0
):
    """Pre-trained and fine-tuned weights plus correlated calibration inputs (tokens × columns)."""
    generator = torch.Generator().manual_seed(seed)
    pretrained = torch.randn(rows, columns, generator=generator, dtype=dtype)
    finetuned = pretrained + 0.3 * torch.randn(rows, columns, generator=generator, dtype=dtype)
    mixing = mixing_scale * torch.randn(columns, columns, generator=generator, dtype=dtype) / columns**0.5
    inputs = torch.randn(tokens, columns, generator=generator, dtype=dtype) @ (
        torch.eye(columns, dtype=dtype) + mixing
    )
    return pretrained, finetuned, inputs


def hessian_of(inputs: torch.Tensor) -> torch.Tensor:
    accumulator = HessianAccumulator(inputs.shape[1], dtype=inputs.dtype)
    for chunk in inputs.split(64):
        accumulator.add(chunk)
    return accumulator.hessian()


def output_error(finetuned: torch.Tensor, weight: torch.Tensor, inputs: torch.Tensor) -> float:
    return torch.linalg.norm(inputs @ finetuned.T - inputs @ weight.T).item()


def explicit_inverse_reference(pretrained, finetuned, hessian, keep, damp):
    """OBS one column at a time with an explicit inverse of the Hessian of the columns left."""
    hessian = hessian.clone()
    hessian.diagonal()[hessian.diagonal() == 0] = 1.0
    hessian += damp * hessian.diagonal().mean() * torch.eye(hessian.shape[0], dtype=hessian.dtype)
    weight = finetuned.clone()
    for column in range(weight.shape[1]):
        inverse = torch.linalg.inv(hessian[column:, column:])
        target = torch.where(keep[:, column], weight[:, column], pretrained[:, column])
        error = (weight[:, column] - target) / inverse[0, 0]
        weight[:, column:] -= error.unsqueeze(1) * inverse[0].unsqueeze(0)
        weight[:, column] = target
    return weight


def test_hessian_is_two_over_n_x_xt():
    _, _, inputs = random_layer(tokens=130)
    torch.testing.assert_close(hessian_of(inputs), 2.0 / 130 * inputs.T @ inputs)


@pytest.mark.parametrize("score", ["paper", "released"])
@pytest.mark.parametrize("blocksize", [16, 128])
def test_compensation_matches_explicit_inverse_reference(score, blocksize):
    pretrained, finetuned, inputs = random_layer()
    hessian = hessian_of(inputs)
    config = TailorConfig(patch=0.3, omega=0.6, blocksize=blocksize, damp=0.01, score=score)
    result = tailor_layer(pretrained, finetuned, hessian, config)
    reference = explicit_inverse_reference(pretrained, finetuned, hessian, result.keep, config.damp)
    relative = torch.linalg.norm(result.weight - reference) / torch.linalg.norm(reference)
    assert relative < 1e-5, relative.item()
    kept = result.keep
    assert not torch.equal(result.weight[kept], finetuned[kept]), "kept weights must be compensated"
    torch.testing.assert_close(result.weight[~kept], pretrained[~kept], rtol=0, atol=0)


@pytest.mark.parametrize("score", ["paper", "released"])
def test_blocked_equals_columnwise_reference(score):
    pretrained, finetuned, inputs = random_layer(rows=20, columns=70, seed=3)
    config = TailorConfig(patch=0.2, blocksize=32, score=score)
    blocked = tailor_layer(pretrained, finetuned, hessian_of(inputs), config)
    columnwise = tailor_layer_columnwise(pretrained, finetuned, hessian_of(inputs), config)
    assert torch.equal(blocked.keep, columnwise.keep)
    torch.testing.assert_close(blocked.weight, columnwise.weight, rtol=1e-9, atol=1e-9)


def test_float32_layer_stays_close_to_float64_reference():
    pretrained, finetuned, inputs = random_layer(seed=5)
    config = TailorConfig(patch=0.25, blocksize=16)
    result = tailor_layer(pretrained.float(), finetuned.float(), hessian_of(inputs).float(), config)
    assert result.weight.dtype == torch.float32
    reference = explicit_inverse_reference(
        pretrained, finetuned, hessian_of(inputs), result.keep, config.damp
    )
    relative = torch.linalg.norm(result.weight.double() - reference) / torch.linalg.norm(reference)
    assert relative < 1e-4


def test_full_patch_is_finetuned_and_empty_patch_is_pretrained():
    pretrained, finetuned, inputs = random_layer()
    hessian = hessian_of(inputs)
    full = tailor_layer(pretrained, finetuned, hessian, TailorConfig(patch=1.0, blocksize=16))
    empty = tailor_layer(pretrained, finetuned, hessian, TailorConfig(patch=0.0, blocksize=16))
    assert torch.equal(full.weight, finetuned) and full.keep.all()
    assert torch.equal(empty.weight, pretrained) and not empty.keep.any()


@pytest.mark.parametrize("patch", [0.1, 0.37, 0.5, 0.93])
def test_reverted_share_is_exact_in_every_block(patch):
    pretrained, finetuned, inputs = random_layer(rows=9, columns=50)
    blocksize = 16
    result = tailor_layer(
        pretrained, finetuned, hessian_of(inputs), TailorConfig(patch=patch, blocksize=blocksize)
    )
    for start in range(0, 50, blocksize):
        block = result.keep[:, start : start + blocksize]
        assert (~block).sum().item() == revert_count(block.numel(), patch)
    assert revert_count(9 * 16, 0.1) == round(0.9 * 144)  # 129.6 -> 130


@pytest.mark.parametrize("score", ["paper", "released"])
def test_obs_sign_lowers_output_error_and_released_sign_raises_it(score):
    """The documented sign choice: OBS's subtraction beats masking alone; the released `+=` is worse."""
    pretrained, finetuned, inputs = random_layer(rows=16, columns=48, tokens=400, seed=11, mixing_scale=3.0)
    hessian = hessian_of(inputs)
    config = TailorConfig(patch=0.2, blocksize=16, score=score)
    for sign, better in ((-1, True), (+1, False)):
        result = tailor_layer(pretrained, finetuned, hessian, config, compensation_sign=sign)
        masked_only = torch.where(result.keep, finetuned, pretrained)
        compensated_error = output_error(finetuned, result.weight, inputs)
        masking_error = output_error(finetuned, masked_only, inputs)
        if better:
            assert compensated_error < masking_error, (compensated_error, masking_error)
        else:
            assert compensated_error > masking_error, (compensated_error, masking_error)


def test_multi_task_fusion_is_mask_union_and_mean_compensation():
    pretrained, finetuned_a, inputs_a = random_layer(rows=6, columns=20, seed=1)
    _, finetuned_b, inputs_b = random_layer(rows=6, columns=20, seed=2)
    finetuned_b = pretrained + (finetuned_b - finetuned_b.mean())  # another task, same base
    config = TailorConfig(patch=0.3, blocksize=8)
    result_a = tailor_layer(pretrained, finetuned_a, hessian_of(inputs_a), config)
    result_b = tailor_layer(pretrained, finetuned_b, hessian_of(inputs_b), config)
    fused = fuse_task_patches(pretrained, [finetuned_a, finetuned_b], [result_a, result_b])
    assert (result_a.keep ^ result_b.keep).any(), "the test needs masks that differ"
    for row in range(6):
        for column in range(20):
            keep_a, keep_b = result_a.keep[row, column].item(), result_b.keep[row, column].item()
            if not (keep_a or keep_b):
                expected = pretrained[row, column]
            else:
                comp_a = result_a.weight[row, column] - finetuned_a[row, column] if keep_a else 0.0
                comp_b = result_b.weight[row, column] - finetuned_b[row, column] if keep_b else 0.0
                mean_finetuned = (finetuned_a[row, column] + finetuned_b[row, column]) / 2
                expected = mean_finetuned + (comp_a + comp_b) / 2
            assert fused[row, column].item() == pytest.approx(float(expected), rel=1e-12, abs=1e-12)
    single = fuse_task_patches(pretrained, [finetuned_a], [result_a])
    assert torch.equal(single, result_a.weight)


def test_scores_hand_made():
    pretrained = torch.zeros(2, 3)
    current = torch.tensor([[0.1, -2.0, 0.5], [1.0, 0.0, -0.2]])
    inverse_diagonal = torch.ones(3)
    paper = fusion_scores(current, pretrained, inverse_diagonal, omega=1.0, mode="paper")
    assert paper.min().item() == 0.0 and paper.max().item() == 1.0
    assert paper.argmax().item() == 1  # the largest |Δ| is the most salient
    released = fusion_scores(current, pretrained, inverse_diagonal, omega=0.5, mode="released")
    torch.testing.assert_close(released.mean(dim=1), torch.zeros(2), atol=1e-6, rtol=0)
    # Sensitivity alone, paper: Δ²/(2[H⁻¹]_ii): a large [H⁻¹]_ii makes a weight cheap to revert.
    sensitivity = fusion_scores(current, pretrained, torch.tensor([1.0, 100.0, 1.0]), omega=0.0, mode="paper")
    assert sensitivity[0, 1] < sensitivity[1, 0]


def test_dead_inputs_do_not_break_the_factorisation():
    pretrained, finetuned, inputs = random_layer(rows=5, columns=12)
    inputs[:, 3] = 0.0
    result = tailor_layer(pretrained, finetuned, hessian_of(inputs), TailorConfig(patch=0.5, blocksize=4))
    assert torch.isfinite(result.weight).all()


@pytest.mark.parametrize(
    "config, where",
    [
        (TailorConfig(patch=1.5), "--patch"),
        (TailorConfig(patch=-0.1), "--patch"),
        (TailorConfig(omega=2.0), "--omega"),
        (TailorConfig(damp=0.0), "--damp"),
        (TailorConfig(blocksize=0), "--blocksize"),
    ],
)
def test_bad_settings_are_rejected(config, where):
    with pytest.raises(EmtbenchError) as error:
        config.check()
    assert error.value.where == where


def test_mismatched_shapes_are_rejected():
    with pytest.raises(EmtbenchError, match="one shape"):
        tailor_layer(torch.zeros(3, 4), torch.zeros(4, 3), torch.eye(3))
