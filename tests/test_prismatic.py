"""Prismatic run directory -> transformers LLaVA: same logits as Prismatic's own forward, clear refusals.

The run directory is generated here in Prismatic's layout (config.json ``model`` section,
``checkpoints/latest-checkpoint.pt`` with ``projector`` and ``llm.``-prefixed ``llm_backbone`` state
dicts, vocabulary padded to a multiple of 64 after adding ``<PAD>``) from tiny random backbones; the
"pretrained" vision tower and LLM tokenizer/config are local folders, so nothing touches a hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_emtbench
from PIL import Image

from emtbench.core.errors import EmtbenchError
from emtbench.models.prismatic.convert import convert_prismatic, prismatic_chat_template

PROMPT = "What is the object in the image? Please only answer a single object in cat, dog."


def _write_run(
    root: Path, *, arch: str, vision_id: str = "clip-vit-l", llm_id: str = "llama2-7b-pure"
) -> dict:
    """Tiny backbones saved as Prismatic would: returns paths and the tensors written."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from emtbench.testing import build_tiny_tokenizer

    torch.manual_seed(0)
    vision_dir, llm_dir, run_dir = root / "vision", root / "llm", root / "run"
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
             "image_size": 224, "patch_size": 32}  # fmt: skip
    if vision_id.startswith("siglip"):
        from transformers import SiglipVisionConfig, SiglipVisionModel

        vision = SiglipVisionModel(SiglipVisionConfig(**tower)).eval()
    else:
        vision = CLIPVisionModel(CLIPVisionConfig(**tower, hidden_act="quick_gelu")).eval()
    vision.save_pretrained(vision_dir)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(llm_dir)
    padded_vocab = -(-(len(tokenizer) + 1) // 64) * 64  # "+ <PAD>", pad_to_multiple_of=64
    llm_config = LlamaConfig(
        vocab_size=padded_vocab, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    llm_config.save_pretrained(llm_dir)
    llm = LlamaForCausalLM(llm_config).eval()
    if arch == "gelu-mlp":
        projector = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.GELU(), torch.nn.Linear(48, 48))
    else:
        projector = torch.nn.Linear(32, 48)
    projector_state = {f"projector.{k}": v for k, v in projector.state_dict().items()}
    llm_state = {f"llm.{k}": v for k, v in llm.state_dict().items()}
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save(
        {"model": {"projector": projector_state, "llm_backbone": llm_state}},
        run_dir / "checkpoints" / "latest-checkpoint.pt",
    )
    config = {
        "model": {
            "model_id": "tiny-prism", "vision_backbone_id": vision_id, "llm_backbone_id": llm_id,
            "arch_specifier": arch, "image_resize_strategy": "letterbox", "llm_max_length": 512,
        }
    }  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps(config))
    return {"run": run_dir, "vision": vision_dir, "llm": llm_dir, "vision_model": vision,
            "projector": projector, "llm_model": llm}  # fmt: skip


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("prismatic")
    made = _write_run(root, arch="gelu-mlp")
    out = root / "hf"
    code = run_emtbench(
        "convert", "prismatic", str(made["run"]), "--output", str(out),
        "--vision-tower", str(made["vision"]), "--llm", str(made["llm"]),
    )  # fmt: skip
    assert code == 0
    return made | {"out": out}


def _reference_logits(
    made: dict, pixel_values: torch.Tensor, text_ids: torch.Tensor, *, drop_cls: bool = True
) -> torch.Tensor:
    """Prismatic's forward: 2nd-to-last-layer patches (CLIP: no CLS) -> projector -> spliced after BOS."""
    with torch.no_grad():
        hidden = made["vision_model"](pixel_values, output_hidden_states=True).hidden_states[-2]
        hidden = hidden[:, 1:] if drop_cls else hidden
        patches = made["projector"](hidden)
        embeddings = made["llm_model"].get_input_embeddings()(text_ids)
        spliced = torch.cat([embeddings[:, :1], patches, embeddings[:, 1:]], dim=1)
        return made["llm_model"](inputs_embeds=spliced).logits


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))


def test_converted_model_matches_prismatic_forward(converted):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(converted["out"]).eval()
    processor = AutoProcessor.from_pretrained(converted["out"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == f"<image>In: {PROMPT}\nOut:"  # Prismatic's "pure" prompt, image right after BOS
    inputs = processor(images=[_image()], text=[text], return_tensors="pt")
    ids = inputs["input_ids"][0]
    image_id = model.config.image_token_id
    assert ids[0] == processor.tokenizer.bos_token_id and ids[1] == image_id
    assert int((ids == image_id).sum()) == 49  # (224 / 32) ** 2 patches, CLS dropped

    with torch.no_grad():
        logits = model(**inputs).logits
    text_ids = ids[ids != image_id].unsqueeze(0)
    expected = _reference_logits(converted, inputs["pixel_values"], text_ids)
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_conversion_records_run_and_resize_strategy(converted):
    run = json.loads((converted["out"] / "emtbench_run.json").read_text())
    assert run["method"] == "convert-prismatic"
    assert run["settings"]["image_resize_strategy"] == "letterbox"
    assert run["settings"]["llm_backbone_id"] == "llama2-7b-pure"
    image_config = json.loads((converted["out"] / "processor_config.json").read_text())["image_processor"]
    assert image_config["do_pad"] is True  # letterbox = pad to square with the mean colour


@pytest.mark.slow
def test_converted_run_evaluates_with_hf_multimodal(converted, tmp_path):
    from conftest import read_results

    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={converted['out']}",
        "--device", "cpu", "--tasks", "emt_digits", "--limit", "2", "--batch_size", "2",
        "--apply_chat_template", "--output_path", str(tmp_path), "--log_samples",
    )  # fmt: skip
    assert code == 0
    assert "acc,none" in read_results(tmp_path)["results"]["emt_digits"]
    sample = json.loads(next(tmp_path.rglob("samples_emt_digits_*.jsonl")).read_text().splitlines()[0])
    assert sample["arguments"]["gen_args_0"]["arg_0"].endswith("\nOut:")  # Prismatic prompt applied


def test_siglip_tower_keeps_all_tokens_and_matches(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    made = _write_run(tmp_path, arch="gelu-mlp", vision_id="siglip-vit-so400m", llm_id="vicuna-v15-7b")
    out = convert_prismatic(
        made["run"], tmp_path / "hf", vision_tower=str(made["vision"]), llm=str(made["llm"])
    )
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text.startswith("<image>A chat between") and text.endswith(f"USER: {PROMPT} ASSISTANT:")
    inputs = processor(images=[_image()], text=[text], return_tensors="pt")
    ids = inputs["input_ids"][0]
    assert int((ids == model.config.image_token_id).sum()) == 49  # SigLIP has no CLS token to drop
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = _reference_logits(
        made, inputs["pixel_values"], ids[ids != model.config.image_token_id].unsqueeze(0), drop_cls=False
    )
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_linear_projector_converts_exactly(tmp_path):
    from transformers import AutoModelForImageTextToText

    made = _write_run(tmp_path, arch="linear")
    out = convert_prismatic(
        made["run"], tmp_path / "hf", vision_tower=str(made["vision"]), llm=str(made["llm"])
    )
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    features = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.model.multi_modal_projector(features), made["projector"](features))


def test_prompt_formats_follow_prismatic_builders():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def render(fmt: str, bos: bool) -> str:
        template = ImmutableSandboxedEnvironment().from_string(
            prismatic_chat_template(fmt, bos_in_template=bos)
        )
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
        return template.render(messages=messages, add_generation_prompt=True, bos_token="<|endoftext|>")

    assert render("vicuna", False).endswith(" USER: Q? ASSISTANT:")
    assert render("mistral-instruct", False) == "<image>[INST] Q? [/INST]"
    assert render("phi", True) == "<|endoftext|><image>Input: Q?\nOutput:"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"vision_backbone_id": "dinosiglip-vit-so-384px"},
            "unsupported vision backbone 'dinosiglip-vit-so-384px'",
        ),
        ({"llm_backbone_id": "gemma-2b-instruct"}, "unsupported LLM backbone 'gemma-2b-instruct'"),
        ({"arch_specifier": "fused-gelu-mlp"}, "unsupported projector 'fused-gelu-mlp'"),
    ],
)
def test_unsupported_backbones_are_refused_by_name(tmp_path, change, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = {"vision_backbone_id": "clip-vit-l", "llm_backbone_id": "vicuna-v15-7b",
             "arch_specifier": "gelu-mlp", "image_resize_strategy": "letterbox"}  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps({"model": model | change}))
    with pytest.raises(EmtbenchError, match=message):
        convert_prismatic(run_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = {"vision_backbone_id": "clip-vit-l", "llm_backbone_id": "vicuna-v15-7b",
             "arch_specifier": "gelu-mlp", "image_resize_strategy": "letterbox"}  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps({"model": model}))
    code = run_emtbench("convert", "prismatic", str(run_dir), "--output", str(tmp_path / "out"))
    assert code == 2
    err = capsys.readouterr().err
    assert "latest-checkpoint.pt not found" in err and "Fix:" in err
    assert not (tmp_path / "out").exists()


class _NotATensor:
    """Anything pickled that is not a tensor: loading it would run code from the file."""


def test_pickle_with_objects_is_refused(tmp_path):
    made = _write_run(tmp_path, arch="linear")
    checkpoint = made["run"] / "checkpoints" / "latest-checkpoint.pt"
    payload = torch.load(checkpoint, weights_only=True)
    payload["model"]["extra"] = _NotATensor()
    torch.save(payload, checkpoint)
    with pytest.raises(EmtbenchError, match="refusing to load a checkpoint that holds more than tensors"):
        convert_prismatic(
            made["run"], tmp_path / "hf", vision_tower=str(made["vision"]), llm=str(made["llm"])
        )
    assert not (tmp_path / "hf").exists()


@pytest.mark.slow
def test_emtbench_prismatic_model_explains_how_to_install(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "prismatic", None)  # not importable, whatever the environment has
    code = run_emtbench(
        "eval", "--model", "emtbench-prismatic", "--model_args", f"pretrained={tmp_path}",
        "--tasks", "emt_digits", "--limit", "1", "--output_path", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "prismatic package is not importable" in err
    assert "pip install git+https://github.com/TRI-ML/prismatic-vlms" in err


class _PromptBuilder:
    def __init__(self):
        self.turns = []

    def add_turn(self, role, message):
        self.turns.append((role, message))

    def get_prompt(self):
        return "In: " + self.turns[0][1] + "\nOut:"


class _RecordingVLM:
    """Stands in for prismatic.load's PrismaticVLM to check the adapter's calls, not Prismatic itself."""

    def __init__(self):
        self.calls = []

    def to(self, device):
        self.device = device
        return self

    def get_prompt_builder(self):
        return _PromptBuilder()

    def generate(self, image, prompt_text, **kwargs):
        self.calls.append((image.mode, prompt_text, kwargs))
        return "The number is 7.\nUSER: more"


def test_emtbench_prismatic_adapter_formats_prompt_and_stops(monkeypatch):
    import sys
    import types

    from lm_eval.api.instance import Instance

    from emtbench.models.prismatic.lm import PrismaticLM

    vlm = _RecordingVLM()
    fake = types.ModuleType("prismatic")
    fake.load = lambda path, hf_token=None: vlm
    monkeypatch.setitem(sys.modules, "prismatic", fake)
    lm = PrismaticLM(pretrained="runs/x", device="cpu")
    request = Instance(
        request_type="generate_until",
        doc={},
        arguments=(
            "<image>What is it?",
            {"until": ["\n"], "max_gen_toks": 5},
            {"visual": [_image().convert("L")]},
        ),
        idx=0,
    )
    assert lm.generate_until([request]) == ["The number is 7."]
    mode, prompt, kwargs = vlm.calls[0]
    assert mode == "RGB" and prompt == "In: What is it?\nOut:"
    assert kwargs == {"do_sample": False, "max_new_tokens": 5}
