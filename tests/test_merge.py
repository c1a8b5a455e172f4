"""Merge baselines: DARE, task arithmetic, TIES on hand-made vectors; DARE and grafting through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_emtbench
from fusion_helpers import target_loss

from emtbench.core.errors import EmtbenchError
from emtbench.methods.fusion.base import (
    MERGE_METHODS,
    DensityParameters,
    MergeContext,
    NoParameters,
    WeightParameters,
    get_merge_method,
    merge_state,
    register_merge_method,
    top_share_mask,
)
from emtbench.methods.fusion.methods.dare import dare_delta
from emtbench.methods.fusion.methods.ties import ties_delta


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


def test_top_share_mask_picks_what_a_stable_sort_picks():
    """The linear-time selection keeps the same entries as a stable descending sort, ties included."""
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(0, 20, (40, 37), generator=generator).float()  # many ties at any threshold
    for density in (0.01, 0.2, 0.5, 0.77, 0.999):
        count = min(values.numel(), int(density * values.numel() + 0.5))
        expected = torch.zeros(values.numel(), dtype=torch.bool)
        expected[torch.argsort(values.flatten(), descending=True, stable=True)[:count]] = True
        assert torch.equal(top_share_mask(values, density), expected.view_as(values)), density
    assert top_share_mask(values, 1.0).all()


def test_top_share_mask_on_signed_values_picks_what_a_stable_sort_picks():
    """Negative values and -0.0 (where integer bit patterns do not order as the floats): same entries."""
    generator = torch.Generator().manual_seed(1)
    values = torch.randint(-10, 10, (23, 19), generator=generator).float()
    values[0, :4] = -0.0
    for density in (0.05, 0.3, 0.5, 0.9):
        count = min(values.numel(), int(density * values.numel() + 0.5))
        expected = torch.zeros(values.numel(), dtype=torch.bool)
        expected[torch.argsort(values.flatten(), descending=True, stable=True)[:count]] = True
        assert torch.equal(top_share_mask(values, density), expected.view_as(values)), density


def _ties_reference(deltas, density):
    """TIES as first written: stacked trims, sign maps, the disjoint mean (what ties_delta must equal)."""
    trimmed = torch.stack([torch.where(top_share_mask(d.abs(), density), d, 0.0) for d in deltas])
    elected = torch.sign(trimmed.sum(dim=0))
    agrees = (torch.sign(trimmed) == elected) & (trimmed != 0)
    count = agrees.sum(dim=0)
    total = torch.where(agrees, trimmed, 0.0).sum(dim=0)
    return torch.where(count > 0, total / count.clamp_min(1), 0.0)


@pytest.mark.parametrize("models", [1, 2, 3, 5])
def test_ties_delta_equals_the_reference_to_the_bit(models):
    """Many magnitude ties, opposite signs, exact cancellations and -0.0: the merged weights are the
    reference's bit for bit (the sign of zero included, as pre-trained + δ)."""
    generator = torch.Generator().manual_seed(models)
    for density in (0.1, 0.2, 0.5, 1.0):
        deltas = [torch.randint(-3, 4, (31, 17), generator=generator).float() for _ in range(models)]
        deltas[0][0, :6] = -0.0
        pretrained = torch.randint(-2, 3, (31, 17), generator=generator).float()
        pretrained[1, :6] = -0.0
        got = (pretrained + ties_delta(deltas, density)).view(torch.int32)
        expected = (pretrained + _ties_reference(deltas, density)).view(torch.int32)
        assert torch.equal(got, expected), density


def test_lazy_reads_refuse_nan_and_accept_finite_values_whose_sum_overflows(tmp_path):
    from safetensors.torch import save_file

    from emtbench.methods.fusion.checkpoints import LazyCheckpoint

    file = tmp_path / "model.safetensors"
    huge = torch.full((64,), 60000.0, dtype=torch.float16)  # finite, but its float16 sum is inf
    broken = torch.ones(5)
    broken[3] = float("nan")
    save_file({"huge": huge, "broken": broken, "inf": torch.tensor([1.0, -float("inf")])}, str(file))
    checkpoint = LazyCheckpoint({name: (file, name) for name in ("huge", "broken", "inf")})
    assert torch.equal(checkpoint["huge"], huge) and torch.equal(checkpoint["huge"], huge)  # read twice
    for name in ("broken", "inf"):
        with pytest.raises(EmtbenchError, match="NaN or infinity"):
            checkpoint[name]


def test_tensor_by_tensor_merges_equal_one_call_over_all_tensors():
    """merge_state feeds tensorwise methods one parameter at a time; DARE's draws must not change."""
    generator = torch.Generator().manual_seed(1)
    shapes = {"a": (7, 5), "b": (11,), "c": (3, 4)}
    pretrained = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    finetuned = [
        {name: t + torch.randn(t.shape, generator=generator) for name, t in pretrained.items()}
        for _ in range(2)
    ]
    deltas = [{name: state[name] - pretrained[name] for name in shapes} for state in finetuned]
    for method, parameters in (
        ("dare", DensityParameters(drop_rate=0.6)),
        ("ties", DensityParameters(density=0.4)),
    ):
        merge = get_merge_method(method)
        assert merge.tensorwise
        at_once = merge.merge(pretrained, deltas, parameters, MergeContext(progress=False, seed=5))
        one_by_one = merge_state(
            merge, pretrained, finetuned, list(shapes), parameters, MergeContext(progress=False, seed=5)
        )
        for name in shapes:
            torch.testing.assert_close(one_by_one[name], at_once[name], rtol=0, atol=1e-6)
    assert not get_merge_method("graft").tensorwise


def test_checkpoints_are_read_lazily_under_the_models_own_names(tiny_llava_dir, tmp_path):
    """A LLaVA saved by transformers (legacy key names) and a tied-embedding LM read lazily = loaded whole."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from emtbench.methods.fusion.checkpoints import LazyCheckpoint, load_model, open_checkpoint

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tied")
    for folder in (tiny_llava_dir, tmp_path / "tied"):
        model = load_model(str(folder))
        checkpoint = open_checkpoint(str(folder), model)
        assert isinstance(checkpoint, LazyCheckpoint)
        state = model.state_dict()
        assert set(checkpoint) == set(state)
        for name, tensor in state.items():
            assert torch.equal(checkpoint[name], tensor), name


def test_a_checkpoint_that_cannot_be_read_lazily_is_loaded_whole(tmp_path):
    """A fine-tuned copy stored in bf16 next to an fp32 pre-trained model: the eager fallback, same values."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from emtbench.methods.fusion.checkpoints import LazyCheckpoint, load_model, open_checkpoint

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "fp32")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    pretrained = load_model(str(tmp_path / "fp32"))
    checkpoint = open_checkpoint(str(tmp_path / "bf16"), pretrained)
    assert not isinstance(checkpoint, LazyCheckpoint)
    for name, tensor in model.state_dict().items():
        assert checkpoint[name].dtype == torch.bfloat16 and torch.equal(checkpoint[name], tensor), name


def test_task_arithmetic_sums_scaled_task_vectors():
    pretrained = {"w": torch.tensor([1.0, 2.0])}
    finetuned = [{"w": torch.tensor([2.0, 2.0])}, {"w": torch.tensor([1.0, 5.0])}]
    merged = merge_state(
        get_merge_method("task-arithmetic"), pretrained, finetuned, ["w"], WeightParameters(weight=0.5)
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
            NoParameters(),
        )
        assert torch.equal(merged["w"], torch.ones(2))
    finally:
        del MERGE_METHODS["keep-pretrained"]
    with pytest.raises(EmtbenchError, match="unknown merge method"):
        get_merge_method("nope")


@pytest.mark.parametrize(
    "settings",
    [
        DensityParameters(drop_rate=1.0),
        DensityParameters(density=0.0),
        DensityParameters(density=0.3, drop_rate=0.5),
    ],
)
def test_bad_settings_are_rejected(settings):
    with pytest.raises(EmtbenchError):
        settings.check()


def _run(output):
    return json.loads((output / "emtbench_run.json").read_text())


@pytest.mark.slow
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


@pytest.mark.slow
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
