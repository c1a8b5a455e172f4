"""Merge baselines: DARE, task arithmetic, TIES on hand-made vectors; DARE and grafting through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_emtbench
from fusion_helpers import target_loss

from emtbench.core.errors import EmtbenchError
from emtbench.methods.fusion.merge import (
    MERGE_METHODS,
    MergeSettings,
    dare_delta,
    get_merge_method,
    merge_state,
    register_merge_method,
    ties_delta,
    top_share_mask,
)


def test_dare_keeps_the_expected_task_vector():
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(50, generator=generator)
    drop_rate = 0.7
    draws = torch.stack([dare_delta(delta, drop_rate, generator) for _ in range(4000)])
    # survivors are exactly rescaled, the rest exactly zero
    survivors = draws != 0
    torch.testing.assert_close(draws[survivors], (delta / (1 - drop_rate)).expand_as(draws)[survivors])
    assert abs(survivors.float().mean().item() - (1 - drop_rate)) < 0.01
    # E[dare(δ)] = δ: the mean over draws is within 4 standard errors of δ for every entry
    standard_error = delta.abs() * (drop_rate / (1 - drop_rate) / 4000) ** 0.5
    assert ((draws.mean(dim=0) - delta).abs() <= 4 * standard_error).all()


def test_dare_is_seeded():
    delta = torch.randn(1000)
    first = dare_delta(delta, 0.5, torch.Generator().manual_seed(3))
    again = dare_delta(delta, 0.5, torch.Generator().manual_seed(3))
    other = dare_delta(delta, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_ties_trims_elects_signs_and_takes_the_disjoint_mean():
    deltas = [
        torch.tensor([1.0, -2.0, 3.0, 0.5, 0.0]),
        torch.tensor([2.0, 1.0, -4.0, -0.1, 0.0]),
        torch.tensor([-1.0, -3.0, 0.2, 0.3, 0.0]),
    ]
    # density 0.6 keeps 3 of 5 entries by magnitude in each vector:
    #   [1, -2, 3, 0, 0], [2, 1, -4, 0, 0], [-1, -3, 0, 0.3, 0]
    # summed [2, -4, -1, 0.3, 0] -> elected signs [+, -, -, +, 0]
    # agreeing entries: [1, 2], [-2, -3], [-4], [0.3], [] -> means [1.5, -2.5, -4, 0.3, 0]
    merged = ties_delta(deltas, density=0.6)
    torch.testing.assert_close(merged, torch.tensor([1.5, -2.5, -4.0, 0.3, 0.0]))


def test_top_share_mask_is_exact():
    values = torch.tensor([0.1, 0.5, 0.5, 0.2, 0.9, 0.0])
    assert top_share_mask(values, 0.5).tolist() == [False, True, True, False, True, False]
    assert top_share_mask(values, 0.0).sum() == 0


def test_task_arithmetic_sums_scaled_task_vectors():
    pretrained = {"w": torch.tensor([1.0, 2.0])}
    finetuned = [{"w": torch.tensor([2.0, 2.0])}, {"w": torch.tensor([1.0, 5.0])}]
    merged = merge_state(
        get_merge_method("task-arithmetic"), pretrained, finetuned, ["w"], MergeSettings(weight=0.5)
    )
    torch.testing.assert_close(merged["w"], torch.tensor([1.5, 3.5]))


def test_registry_accepts_new_methods_and_rejects_unknown_names():
    assert {"dare", "task-arithmetic", "ties", "graft"} <= set(MERGE_METHODS)

    @register_merge_method("keep-pretrained", summary="test only")
    def keep(pretrained, deltas, settings, context):
        return dict(pretrained)

    try:
        merged = merge_state(
            get_merge_method("keep-pretrained"),
            {"w": torch.ones(2)},
            [{"w": torch.zeros(2)}],
            ["w"],
            MergeSettings(),
        )
        assert torch.equal(merged["w"], torch.ones(2))
    finally:
        del MERGE_METHODS["keep-pretrained"]
    with pytest.raises(EmtbenchError, match="unknown merge method"):
        get_merge_method("nope")


@pytest.mark.parametrize(
    "settings",
    [MergeSettings(drop_rate=1.0), MergeSettings(density=0.0), MergeSettings(density=0.3, drop_rate=0.5)],
)
def test_bad_settings_are_rejected(settings):
    with pytest.raises(EmtbenchError):
        settings.check()


def _run(output):
    return json.loads((output / "emtbench_run.json").read_text())


def test_dare_command(tiny_llava_dir, tiny_finetuned_llava_dir, tmp_path):
    output = tmp_path / "dare"
    code = run_emtbench(
        "merge", "--method", "dare", "--pretrained", str(tiny_llava_dir),
        "--finetuned", str(tiny_finetuned_llava_dir), "--drop-rate", "0.9", "--seed", "0",
        "--output", str(output), "--no-progress",
    )  # fmt: skip
    assert code == 0
    run = _run(output)
    assert run["method"] == "dare" and run["settings"]["drop_rate"] == 0.9
    shares = run["changed_share_per_tensor"]
    assert shares and not any("vision_tower" in name or "embed_tokens" in name for name in shares)
    large = [share for name, share in shares.items() if name.endswith("mlp.up_proj.weight")]
    assert all(0.08 < share < 0.12 for share in large), large


def test_graft_command_learns_a_mask_that_helps_the_target(
    tiny_llava_dir, tiny_finetuned_llava_dir, tmp_path
):
    output = tmp_path / "graft"
    code = run_emtbench(
        "merge", "--method", "graft", "--pretrained", str(tiny_llava_dir),
        "--finetuned", str(tiny_finetuned_llava_dir), "--density", "0.1", "--calib-data", "emt:digits",
        "--calib-samples", "16", "--steps", "8", "--output", str(output), "--no-progress",
    )  # fmt: skip
    assert code == 0
    run = _run(output)
    assert run["method"] == "graft" and run["data"]["calibration"] == ["emt:digits"]
    # exactly the top 10% of the selected task-vector entries are grafted (all are non-zero here)
    assert run["parameters"]["changed"] == pytest.approx(0.1 * _selected_count(run), abs=1)
    assert target_loss(output, "emt:digits") < target_loss(tiny_llava_dir, "emt:digits")


def _selected_count(run) -> int:
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(run["base_model"])
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return sum(model.get_parameter(name).numel() for name in run["layers"])


def test_graft_without_calibration_data_is_rejected(tiny_llava_dir, tmp_path, capsys):
    code = run_emtbench(
        "merge", "--method", "graft", "--pretrained", str(tiny_llava_dir), "--finetuned", str(tiny_llava_dir),
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and "--calib-data" in capsys.readouterr().err
