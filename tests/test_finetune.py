"""Fine-tuning methods on a tiny random LLaVA: what each method may change, the loss, data and outputs."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import read_results, run_emtbench

from emtbench.core.errors import EmtbenchError
from emtbench.methods.finetune import FinetuneOptions, TrainSettings, finetune
from emtbench.methods.finetune.data import IGNORE_INDEX, ConversationCollator, load_conversations
from emtbench.methods.finetune.loss import soft_target_loss
from emtbench.methods.finetune.rehearsal import build_training_data, rehearsal_sample
from emtbench.methods.finetune.trainer import make_trainer_class, train

# --- helpers -----------------------------------------------------------------------------------


def finetune_run(model: str, data: str, output: Path, settings: TrainSettings, **options):
    """``emtbench.finetune`` on one model and data spec; returns (output folder, run record)."""
    result = finetune(FinetuneOptions(model=model, data=data, output=output, settings=settings, **options))
    return result.output, result.record


def write_llava_json(folder: Path, count: int = 6, *, multi_turn: bool = False, name: str = "shapes") -> Path:
    """A LLaVA-format JSON file with real PNG images next to it."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    records = []
    for index in range(count):
        Image.new("RGB", (12, 12), color=(index * 40 % 256, 80, 200)).save(folder / "images" / f"{index}.png")
        turns = [
            {"from": "human", "value": "<image>\nWhat is the object in the image?"},
            {"from": "gpt", "value": f"The object is a(n) {'ship' if index % 2 else 'truck'}."},
        ]
        if multi_turn:
            turns += [{"from": "human", "value": "Is it red?"}, {"from": "gpt", "value": "no"}]
        records.append({"id": str(index), "image": f"images/{index}.png", "conversations": turns})
    path = folder / f"{name}.json"
    path.write_text(json.dumps(records))
    return path


def state(module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def differing(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


@pytest.fixture(scope="session")
def tiny_processor(tiny_llava_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_llava_dir)


@pytest.fixture(scope="session")
def base_model(tiny_llava_dir):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_llava_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def digits_train():
    return load_conversations("emt:digits", limit=8, seed=0)


@pytest.fixture(scope="session")
def fixed_batch(digits_train, tiny_processor):
    return ConversationCollator(tiny_processor)([digits_train[i] for i in range(8)])


def batch_loss(model, batch) -> float:
    with torch.no_grad():
        return float(model(**batch).loss)


@pytest.fixture(scope="session")
def trained(tiny_llava_dir, digits_train, tmp_path_factory):
    """Each method trained a few steps on the same 8 examples (one Trainer run per method)."""
    results = {}
    rates = {"linear": 1e-2, "full": 2e-3, "lora": 1e-2, "soft": 2e-3, "msgm": 1e-2}
    # soft also covers gradient checkpointing + accumulation (4 x 2 = the same 8 examples); msgm covers bf16.
    for method, lr in rates.items():
        settings = TrainSettings.of(
            method=method, max_steps=6, batch_size=4 if method == "soft" else 8, learning_rate=lr,
            warmup_ratio=0.0, lr_scheduler="constant", keep_adapter=method == "lora", logging_steps=1,
            grad_accum=2 if method == "soft" else 1, gradient_checkpointing=method == "soft", bf16=method == "msgm",
        )  # fmt: skip
        checkpoints = tmp_path_factory.mktemp(f"ckpt-{method}")
        results[method] = train(str(tiny_llava_dir), digits_train, settings, checkpoint_dir=checkpoints)
    return results


# --- soft-target loss --------------------------------------------------------------------------


def test_soft_target_loss_matches_hand_computation_and_is_cross_entropy_at_alpha_zero():
    torch.manual_seed(0)
    vocab = 5
    logits = torch.randn(2, 4, vocab)
    labels = torch.tensor([[IGNORE_INDEX, 1, 3, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 0, 4]])
    alpha = 0.2
    # Hand computation: position t predicts labels[t + 1]; only 4 valid targets.
    total, count = 0.0, 0
    for b in range(2):
        for t in range(3):
            target = int(labels[b, t + 1])
            if target == IGNORE_INDEX:
                continue
            probs = [math.exp(v) for v in logits[b, t].tolist()]
            log_p = [math.log(p / sum(probs)) for p in probs]
            q = [alpha / (vocab - 1)] * vocab
            q[target] = 1 - alpha
            total += -sum(qi * lp for qi, lp in zip(q, log_p, strict=True))
            count += 1
    assert count == 4
    assert float(soft_target_loss(logits, labels, alpha)) == pytest.approx(total / count, rel=1e-5)

    cross_entropy = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert float(soft_target_loss(logits, labels, 0.0)) == pytest.approx(float(cross_entropy), rel=1e-6)
    assert float(soft_target_loss(logits, labels, alpha)) != pytest.approx(float(cross_entropy), rel=1e-3)


# --- answer-only logits ------------------------------------------------------------------------


def loss_and_gradients(trainer, model, batch):
    model.zero_grad()
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), outputs.logits.shape, grads


@pytest.mark.parametrize("kind", ["llava", "flagship"])
@pytest.mark.parametrize("alpha", [None, 0.2])
def test_training_logits_only_where_the_loss_reads_them_give_the_full_sequences_loss_and_gradients(
    kind, alpha, tiny_llava_dir, digits_train, tmp_path
):
    """The Trainer asks for the answer positions' logits only; loss and every gradient are unchanged."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

    from emtbench.methods.finetune.loss import make_compute_loss_func
    from emtbench.methods.finetune.trainer import supervised_positions
    from emtbench.testing import build_tiny_flagship

    folder = tiny_llava_dir if kind == "llava" else build_tiny_flagship(tmp_path / "flagship")
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).train()
    batch = ConversationCollator(processor)([digits_train[i] for i in range(4)])
    # Rows of different answer lengths, so the kept positions are a union that differs per row.
    batch["labels"][0, -1] = IGNORE_INDEX
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[])
    hook = make_compute_loss_func(alpha) if alpha is not None else None
    stock = Trainer(model=model, args=args, compute_loss_func=hook)
    ours = make_trainer_class()(model=model, args=args, compute_loss_func=hook)

    full_loss, full_shape, full_grads = loss_and_gradients(stock, model, batch)
    loss, shape, grads = loss_and_gradients(ours, model, batch)

    kept = supervised_positions(batch["labels"])
    sequence = batch["input_ids"].shape[1]
    assert full_shape[1] == sequence and shape[1] == kept.numel() + 1 < sequence / 2
    assert loss == pytest.approx(full_loss, rel=1e-5)
    assert grads.keys() == full_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, full_grads[name], rtol=1e-4, atol=1e-6, msg=name)

    model.eval()  # evaluation keeps the whole sequence's logits (callers may read them)
    with torch.no_grad():
        _, eval_outputs = ours.compute_loss(model, dict(batch), return_outputs=True)
    assert eval_outputs.logits.shape[1] == sequence


def test_supervised_positions_are_the_union_of_the_rows_next_token_targets():
    from emtbench.methods.finetune.trainer import compact_labels, supervised_positions

    labels = torch.tensor(
        [[IGNORE_INDEX, IGNORE_INDEX, 5, 6, IGNORE_INDEX], [IGNORE_INDEX, 7, IGNORE_INDEX, 8, 9]]
    )
    positions = supervised_positions(labels)
    assert positions.tolist() == [0, 1, 2, 3]  # logit t is read when some row supervises t + 1
    compact, keep = compact_labels(labels, positions)
    assert keep.tolist() == [0, 1, 2, 3, 3]
    assert compact[:, 1:].tolist() == labels[:, 1:].tolist()  # here every later column is kept
    assert supervised_positions(torch.full((2, 4), IGNORE_INDEX)) is None

    padded = torch.tensor([[1, 2, 3, 4, 5, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    padded[0, :3] = IGNORE_INDEX
    compact, keep = compact_labels(padded, supervised_positions(padded))
    assert keep.tolist() == [2, 3, 3] and compact.tolist() == [[IGNORE_INDEX, 4, 5]]


# --- data --------------------------------------------------------------------------------------


def test_emt_conversations_use_the_paper_question_and_answer(digits_train):
    row = digits_train[0]
    assert row["question"] == "What is the number in the image?"
    assert row["answer"].startswith("The number is ") and row["answer"][-2] in "0123456789"
    assert row["image"].size == (8, 8)
    assert load_conversations("emt:digits", limit=8, seed=0)["answer"] == digits_train["answer"]
    assert load_conversations("emt:digits", limit=8, seed=1)["answer"] != digits_train["answer"]


def test_collator_labels_only_answer_tokens_and_eos(digits_train, tiny_processor):
    batch = ConversationCollator(tiny_processor)([digits_train[0], digits_train[1]])
    assert batch["pixel_values"].shape[0] == 2
    tokenizer = tiny_processor.tokenizer
    for index in range(2):
        labelled = batch["input_ids"][index][batch["labels"][index] != IGNORE_INDEX]
        assert tokenizer.decode(labelled).strip() == f"{digits_train[index]['answer']}</s>"


def test_collator_labels_every_assistant_turn_of_a_multi_turn_json(tmp_path, tiny_processor):
    path = write_llava_json(tmp_path, count=2, multi_turn=True)
    rows = load_conversations(str(path))
    assert rows[0]["question"] == "What is the object in the image?"
    assert rows[0]["followups"] == [{"question": "Is it red?", "answer": "no"}]
    batch = ConversationCollator(tiny_processor)([rows[0]])
    labelled = batch["input_ids"][0][batch["labels"][0] != IGNORE_INDEX]
    text = tiny_processor.tokenizer.decode(labelled)
    assert "The object is a(n) truck." in text and "no" in text
    assert "red" not in text and "What is" not in text


def test_rehearsal_mixes_the_requested_fraction_with_a_fixed_seed(tmp_path):
    digits = load_conversations("emt:digits")
    first = rehearsal_sample(digits, 0.05, seed=3)
    assert abs(len(first) - 0.05 * len(digits)) <= 1
    assert first["answer"] == rehearsal_sample(digits, 0.05, seed=3)["answer"]
    assert first["answer"] != rehearsal_sample(digits, 0.05, seed=4)["answer"]

    current = write_llava_json(tmp_path, count=5)
    mixed, counts = build_training_data(str(current), rehearsal_specs=["emt:digits"], rehearsal_fraction=0.01)
    assert counts == {str(current): 5, "rehearsal:emt:digits": round(0.01 * len(digits))}
    assert len(mixed) == 5 + counts["rehearsal:emt:digits"]
    assert (
        sum(answer.startswith("The number is") for answer in mixed["answer"])
        == counts["rehearsal:emt:digits"]
    )


@pytest.mark.parametrize(
    ("spec", "content", "message"),
    [
        ("emt:nosuchset", None, "unknown EMT dataset"),
        ("missing.json", None, "neither an EMT dataset"),
        ("broken.json", "{not json", "not valid JSON"),
        ("noturns.json", '[{"image": "x.png"}]', "conversations"),
    ],
)
def test_bad_data_specs_are_clear_errors(tmp_path, spec, content, message):
    if content is not None:
        (tmp_path / spec).write_text(content)
        spec = str(tmp_path / spec)
    elif spec.endswith(".json"):
        spec = str(tmp_path / spec)
    with pytest.raises(EmtbenchError, match=message):
        load_conversations(spec)


# --- what each method trains -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", ["linear", "full", "lora", "soft", "msgm"])
def test_each_method_lowers_the_loss_and_never_touches_the_vision_tower(
    method, trained, base_model, fixed_batch
):
    result = trained[method]
    model = result.model  # the lora run kept its peft adapter: its forward equals the merged model's
    inner = model.get_base_model() if method == "lora" else model
    assert batch_loss(model, fixed_batch) < batch_loss(base_model, fixed_batch) - 0.05
    assert not differing(state(base_model.model.vision_tower), state(inner.model.vision_tower))
    assert 0 < result.parameters["changed_fraction"] < 1
    assert result.parameters["trained"] > 0


@pytest.mark.slow
def test_linear_changes_only_the_projector(trained, base_model):
    changed = differing(state(base_model), state(trained["linear"].model))
    assert changed and all(name.startswith("model.multi_modal_projector.") for name in changed)
    projector = sum(p.numel() for p in base_model.model.multi_modal_projector.parameters())
    assert trained["linear"].parameters["trained"] == projector


@pytest.mark.slow
def test_full_changes_projector_and_language_model(trained, base_model):
    changed = differing(state(base_model), state(trained["full"].model))
    assert any(name.startswith("model.multi_modal_projector.") for name in changed)
    assert any(name.startswith("model.language_model.layers.") for name in changed)


@pytest.mark.slow
def test_lora_trains_only_adapters_and_projector_then_merges_into_the_llm(trained, base_model):
    from peft import get_peft_model_state_dict

    peft_model = trained["lora"].model  # rebuilt from the adapter the Trainer saved
    adapter = get_peft_model_state_dict(peft_model)
    assert adapter and all("lora_" in name or "multi_modal_projector" in name for name in adapter)
    assert not any("vision_tower" in name for name in adapter)
    # everything that trained is in the saved adapter: LoRA matrices + the projector
    assert trained["lora"].parameters["trained"] == sum(tensor.numel() for tensor in adapter.values())
    # rank = hidden / 2 with rsLoRA on every LLM linear layer, not the output head
    config = peft_model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.use_rslora, config.lora_dropout) == (32, 8.0, True, 0.05)
    assert all(name.startswith("model.language_model.") for name in config.target_modules)
    assert len(config.target_modules) == 2 * 7  # 2 layers × (q, k, v, o, gate, up, down)

    base_llm = state(base_model.model.language_model)
    frozen = state(peft_model.get_base_model().model.language_model)
    frozen_base_weights = {k.replace(".base_layer", ""): v for k, v in frozen.items() if "lora_" not in k}
    assert not differing(base_llm, frozen_base_weights)  # before merging the LLM weights are untouched

    merged = copy.deepcopy(peft_model).merge_and_unload()
    changed = differing(state(base_model), state(merged))
    assert any(".self_attn.q_proj.weight" in name for name in changed)
    assert any(name.startswith("model.multi_modal_projector.") for name in changed)
    assert not any("embed_tokens" in name or "norm" in name or "vision_tower" in name for name in changed)


# --- command line ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def finetuned_dir(tiny_llava_dir, tmp_path_factory):
    """`emtbench finetune --push-to-hub` through the CLI, pushed over HTTP to a fake Hub on 127.0.0.1.

    Returns the output folder and the files the Hub then holds in the pushed repo."""
    from emtbench.testing.fake_hub import FakeHub, use_fake_hub

    work = tmp_path_factory.mktemp("finetuned")
    output = work / "tiny-lora"
    with FakeHub(root=work / "hub-store") as hub, use_fake_hub(hub, home=work / "hf-home"):
        repo_id = f"{hub.user}/tiny-lora"
        code = run_emtbench(
            "finetune", "--model", str(tiny_llava_dir), "--method", "lora", "--data", "emt:digits",
            "--limit", "8", "--max-steps", "2", "--batch-size", "4", "--seed", "7",
            "--output", str(output), "--push-to-hub", repo_id,
        )  # fmt: skip
        pushed = hub.files(repo_id) if code == 0 else {}
    assert code == 0
    return output, pushed


@pytest.mark.slow
def test_finetune_cli_writes_a_loadable_model_with_its_run_record(finetuned_dir, tiny_llava_dir):
    from transformers import AutoModelForImageTextToText

    output, pushed = finetuned_dir
    run = json.loads((output / "emtbench_run.json").read_text())
    assert run["method"] == "lora" and run["seed"] == 7 and run["base_model"] == str(tiny_llava_dir)
    assert run["data"]["train"] == "emt:digits" and run["data"]["examples"] == {"emt:digits": 8}
    assert run["settings"]["lora_rank"] == 32 and run["settings"]["max_steps"] == 2
    assert 0 < run["parameters"]["changed_fraction"] < 1 and run["parameters"]["trained"] > 0
    assert "## Forgetting results" in (output / "README.md").read_text()
    assert (output / "model.safetensors").is_file() and not list(output.parent.glob(".tiny-lora*"))
    model = AutoModelForImageTextToText.from_pretrained(output)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert not any("lora" in name for name in model.state_dict())
    assert {"model.safetensors", "emtbench_run.json", "README.md"} <= set(pushed)
    assert pushed["model.safetensors"] == (output / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_finetuned_checkpoint_runs_through_emtbench_eval(finetuned_dir, tmp_path):
    output, _ = finetuned_dir
    code = run_emtbench(
        "eval", "--model", "hf-multimodal", "--model_args", f"pretrained={output}", "--device", "cpu",
        "--tasks", "emt_digits", "--limit", "4", "--batch_size", "2", "--apply_chat_template",
        "--output_path", str(tmp_path),
    )  # fmt: skip
    assert code == 0
    results = read_results(tmp_path)["results"]["emt_digits"]
    assert 0.0 <= results["acc,none"] <= 1.0


@pytest.mark.slow
def test_output_holding_a_different_run_is_refused_unless_overwrite(finetuned_dir, tiny_llava_dir, capsys):
    output, _ = finetuned_dir
    before = (output / "model.safetensors").read_bytes()
    code = run_emtbench(
        "finetune", "--model", str(tiny_llava_dir), "--method", "linear", "--data", "emt:digits",
        "--max-steps", "1", "--output", str(output),
    )  # fmt: skip
    assert code == 2
    assert "already holds a different run" in capsys.readouterr().err
    assert (output / "model.safetensors").read_bytes() == before


def test_bad_method_and_unmapped_architecture_fail_before_training(tmp_path, tiny_llava_dir, capsys):
    from transformers import LlamaConfig

    output = tmp_path / "out"
    code = run_emtbench(
        "finetune", "--model", str(tiny_llava_dir), "--method", "dropout", "--data", "emt:digits",
        "--output", str(output),
    )  # fmt: skip
    assert code == 2 and "unknown method 'dropout'" in capsys.readouterr().err

    text_only = tmp_path / "llama"
    config = LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=32)
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(text_only)
    code = run_emtbench(
        "finetune",
        "--model",
        str(text_only),
        "--method",
        "lora",
        "--data",
        "emt:digits",
        "--output",
        str(output),
    )
    err = capsys.readouterr().err
    assert code == 2 and "no part mapping for architecture 'LlamaForCausalLM'" in err
    assert "ARCHITECTURE_PARTS" in err

    code = run_emtbench(
        "finetune",
        "--model",
        str(tiny_llava_dir),
        "--data",
        str(tmp_path / "nothing.json"),
        "--output",
        str(output),
    )
    assert code == 2 and "neither an EMT dataset" in capsys.readouterr().err
    assert not output.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.slow
def test_a_failing_save_leaves_no_half_written_checkpoint(tmp_path, tiny_llava_dir, monkeypatch):
    import emtbench.methods.finetune.run as module

    def failing_save(result, staging):
        (staging / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(module, "save_result", failing_save)
    settings = TrainSettings.of(method="linear", max_steps=1, batch_size=2)
    with pytest.raises(OSError, match="disk full"):
        finetune_run(str(tiny_llava_dir), "emt:digits", tmp_path / "out", settings, limit=2)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".out.checkpoints"] or not list(tmp_path.iterdir())


@pytest.mark.slow
def test_resume_continues_from_the_last_trainer_checkpoint(tmp_path, tiny_llava_dir):
    from safetensors.torch import load_file

    checkpoints = tmp_path / "checkpoints"
    common = {"limit": 4, "checkpoint_dir": checkpoints, "keep_checkpoints": True}
    first = TrainSettings.of(method="linear", max_steps=2, batch_size=2, save_steps=1, learning_rate=1e-2)
    finetune_run(str(tiny_llava_dir), "emt:digits", tmp_path / "first", first, **common)
    assert (checkpoints / "checkpoint-2").is_dir()
    # A very different learning rate would change the weights, unless training resumes at step 2 of 2.
    again = TrainSettings.of(method="linear", max_steps=2, batch_size=2, save_steps=1, learning_rate=1.0)
    finetune_run(str(tiny_llava_dir), "emt:digits", tmp_path / "resumed", again, resume=True, **common)
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    original = load_file(tmp_path / "first" / "model.safetensors")
    assert all(torch.equal(original[name], resumed[name]) for name in original)
    fresh = TrainSettings.of(method="linear", max_steps=2, batch_size=2, learning_rate=1.0)
    finetune_run(str(tiny_llava_dir), "emt:digits", tmp_path / "fresh", fresh, limit=4)
    changed = load_file(tmp_path / "fresh" / "model.safetensors")
    assert any(not torch.equal(original[name], changed[name]) for name in original)


# --- final save (sharded setups), warm-up, LoRA resume ------------------------------------------


def instrumented_trainer(monkeypatch, *, interrupt_at: int | None = None) -> dict:
    """Make ``train`` use a Trainer that records its steps and final saves, and optionally dies at a step."""
    from transformers import TrainerCallback

    import emtbench.methods.finetune.trainer as module

    seen: dict = {"steps": [], "saves": [], "merged": None}
    make_original = make_trainer_class  # the unpatched one, also when called again in one test

    class Interrupted(RuntimeError):
        pass

    class Recorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen["steps"].append(state.global_step)
            if state.global_step == interrupt_at:
                raise Interrupted(f"killed at step {state.global_step}")

    def make_instrumented():
        class Instrumented(make_original()):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.add_callback(Recorder())

            def save_model(self, output_dir=None, _internal_call=False):
                if not _internal_call:  # the final save, not a periodic checkpoint
                    seen["saves"].append(output_dir)
                    if hasattr(self.model, "peft_config"):
                        seen["merged"] = state(copy.deepcopy(self.model).merge_and_unload())
                return super().save_model(output_dir, _internal_call)

        return Instrumented

    monkeypatch.setattr(module, "make_trainer_class", make_instrumented)
    seen["Interrupted"] = Interrupted
    return seen


@pytest.mark.slow
def test_final_weights_go_through_trainer_save_model_and_equal_the_trained_model(
    tmp_path, tiny_llava_dir, monkeypatch
):
    """Single process: the saved folder holds exactly the in-memory trained model, LoRA merged."""
    from safetensors.torch import load_file

    seen = instrumented_trainer(monkeypatch)
    checkpoints = tmp_path / "checkpoints"
    settings = TrainSettings.of(method="lora", max_steps=2, batch_size=2, learning_rate=1e-2, lora_rank=4)
    output, record = finetune_run(
        str(tiny_llava_dir), "emt:digits", tmp_path / "out", settings, limit=4, checkpoint_dir=checkpoints
    )
    assert seen["saves"] == [str(checkpoints / "final")]
    assert not checkpoints.exists()  # the gathered save is a temporary, like the checkpoints
    saved = load_file(output / "model.safetensors")
    from transformers import AutoModelForImageTextToText

    reloaded = state(AutoModelForImageTextToText.from_pretrained(output))
    assert reloaded.keys() == seen["merged"].keys() and len(saved) > 0
    assert not differing(seen["merged"], reloaded)  # bit-identical to merging the in-memory adapter
    assert record["parameters"]["changed"] > 0 and record["parameters"]["trained"] > 0


@pytest.mark.slow
def test_fsdp_final_save_gathers_a_full_state_dict_through_the_accelerator(
    tmp_path, tiny_llava_dir, monkeypatch
):
    """Simulated FSDP with a sharded state-dict type: the save must still gather through the accelerator."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import AutoModelForImageTextToText, Trainer

    from emtbench.methods.finetune.prepare import prepare_model
    from emtbench.methods.finetune.saving import load_trained, save_trained
    from emtbench.methods.finetune.trainer import training_arguments

    settings = TrainSettings.of(method="lora", max_steps=1, lora_rank=4)
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir, dtype=torch.float32)
    settings.resolve(model.config)
    model = prepare_model(model, settings)
    torch.manual_seed(0)
    with torch.no_grad():  # stand-in for training: non-zero LoRA B matrices and a moved projector
        for name, param in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(0.01 * torch.randn_like(param))
    trainer = Trainer(model=model, args=training_arguments(settings, tmp_path / "ckpt"))
    gathered = []

    def get_state_dict(wrapped, unwrap=True):
        gathered.append(wrapped)
        return wrapped.state_dict()  # one process: the "gathered" full state dict is the local one

    monkeypatch.setattr(trainer, "is_fsdp_enabled", True)
    monkeypatch.setattr(
        trainer.accelerator.state,
        "fsdp_plugin",
        FullyShardedDataParallelPlugin(state_dict_type="SHARDED_STATE_DICT"),
        raising=False,  # the state has the attribute only under FSDP
    )
    monkeypatch.setattr(trainer.accelerator, "get_state_dict", get_state_dict)
    save_trained(trainer, tmp_path / "final")
    assert gathered == [model]
    assert "FULL_STATE_DICT" in str(trainer.accelerator.state.fsdp_plugin.state_dict_type)
    rebuilt, parameters = load_trained(tmp_path / "final", str(tiny_llava_dir), settings)
    expected = state(copy.deepcopy(model).merge_and_unload())
    assert not differing(expected, state(rebuilt))
    assert parameters["changed"] > 0


def test_a_final_save_without_weights_is_a_clear_error(tmp_path, tiny_llava_dir):
    """ZeRO-3 without 16-bit gathering makes save_model write only a DeepSpeed checkpoint."""
    from emtbench.methods.finetune.saving import load_trained

    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    with pytest.raises(EmtbenchError, match="no consolidated weights") as error:
        load_trained(tmp_path / "final", str(tiny_llava_dir), TrainSettings.of(method="full"))
    assert "zero3_save_16bit_model" in str(error.value.fix)


def test_warmup_starts_above_zero_and_reaches_the_peak_after_the_warmup_steps():
    from emtbench.methods.finetune.trainer import warmup_scheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = warmup_scheduler(optimizer, "cosine", warmup_steps=3, total_steps=10)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a > b > 0 for a, b in itertools.pairwise(rates[3:]))  # transformers' cosine decay
    assert warmup_scheduler(optimizer, "constant", warmup_steps=3, total_steps=10) is None  # no warm-up there
    assert warmup_scheduler(optimizer, "cosine", warmup_steps=0, total_steps=10) is None


@pytest.mark.slow
def test_a_one_step_run_with_default_settings_changes_the_weights(tmp_path, tiny_llava_dir, base_model):
    settings = TrainSettings.of(
        method="linear", max_steps=1, batch_size=2
    )  # default warm-up ratio and cosine
    assert settings.training.warmup_ratio > 0
    data = load_conversations("emt:digits", limit=2, seed=0)
    result = train(str(tiny_llava_dir), data, settings, checkpoint_dir=tmp_path / "ckpt")
    assert result.train_metrics["global_step"] == 1
    changed = differing(state(base_model), state(result.model))
    assert changed and all(name.startswith("model.multi_modal_projector.") for name in changed)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "keep_adapter"), [("lora", False), ("msgm", True)])
def test_lora_resumes_after_an_interruption_to_the_uninterrupted_result(
    method, keep_adapter, tmp_path, tiny_llava_dir, monkeypatch
):
    from safetensors.torch import load_file

    def settings() -> TrainSettings:  # default warm-up + cosine and dropout: resume must restore all state
        return TrainSettings.of(
            method=method, max_steps=4, batch_size=2, save_steps=2, learning_rate=1e-2, lora_rank=4,
            keep_adapter=keep_adapter,
        )  # fmt: skip

    weights = "adapter_model.safetensors" if keep_adapter else "model.safetensors"
    common = {"limit": 8}
    instrumented_trainer(monkeypatch)
    finetune_run(str(tiny_llava_dir), "emt:digits", tmp_path / "straight", settings(), **common)
    straight = load_file(tmp_path / "straight" / weights)

    interrupted = instrumented_trainer(monkeypatch, interrupt_at=3)
    with pytest.raises(interrupted["Interrupted"]):
        finetune_run(str(tiny_llava_dir), "emt:digits", tmp_path / "resumed", settings(), **common)
    checkpoints = tmp_path / ".resumed.checkpoints"
    assert (checkpoints / "checkpoint-2").is_dir() and not (tmp_path / "resumed").exists()
    at_checkpoint = load_file(checkpoints / "checkpoint-2" / "adapter_model.safetensors")

    resumed_run = instrumented_trainer(monkeypatch)
    _, record = finetune_run(
        str(tiny_llava_dir), "emt:digits", tmp_path / "resumed", settings(), resume=True, **common
    )
    assert resumed_run["steps"] == [3, 4]  # continued from checkpoint-2, did not start over
    assert record["training"]["global_step"] == 4
    resumed = load_file(tmp_path / "resumed" / weights)
    assert resumed.keys() == straight.keys()
    if keep_adapter:
        assert all("lora_" in name or "multi_modal_projector" in name for name in resumed)
        assert (tmp_path / "resumed" / "adapter_config.json").is_file()
    for name, tensor in straight.items():
        assert torch.allclose(resumed[name], tensor, atol=1e-6), name
    # the comparison is meaningful: the two resumed steps moved the adapter past the checkpoint
    assert not checkpoints.exists()

    def projector(weights: dict) -> torch.Tensor:
        return next(v for k, v in weights.items() if k.endswith("multi_modal_projector.linear_1.weight"))

    assert not torch.allclose(projector(at_checkpoint), projector(resumed))


@pytest.mark.slow
def test_two_process_data_parallel_run_writes_one_complete_folder_from_the_main_process(
    tmp_path, tiny_llava_dir
):
    """A real 2-process run (torchrun, gloo on CPU): shared save path, main-process-only writes."""
    import os
    import subprocess
    import sys

    output = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    if torch.cuda.device_count() < 2:
        env["ACCELERATE_USE_CPU"] = "true"  # transformers' CPU data parallelism is opt-in
    argv = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "emtbench.cli",
        "finetune", "--model", str(tiny_llava_dir), "--method", "lora", "--lora-rank", "4",
        "--data", "emt:digits", "--limit", "8", "--max-steps", "2", "--batch-size", "2", "--output", str(output),
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved ") == 1  # only the main process reports
    run = json.loads((output / "emtbench_run.json").read_text())
    assert run["training"]["epoch"] == 1.0  # 2 steps x 2 examples x 2 processes = all 8 examples
    assert run["parameters"]["changed"] > 0
    assert (output / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # no staging or checkpoint leftovers


@pytest.mark.parametrize("name", ["fsdp.yaml", "deepspeed_zero3.yaml"])
def test_example_accelerate_configs_are_valid_for_the_installed_accelerate(name):
    """The shipped configs go through accelerate's own loader, launch validation and plugin parsing."""
    import os
    from unittest import mock

    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = Path(__file__).resolve().parents[1] / "examples" / "accelerate" / name
    config = load_config_from_file(str(path))  # rejects unknown top-level keys
    parser = launch_command_parser()
    options = {action.dest for action in parser._actions}
    nested = {**(config.fsdp_config or {}), **(config.deepspeed_config or {})}
    # `accelerate launch` silently ignores misspelt nested keys: each must be one of its options
    assert nested and all(key in options or f"fsdp_{key}" in options for key in nested)
    args = parser.parse_args(["--config_file", str(path), "-m", "emtbench.cli", "finetune"])
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    if args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    else:  # what `accelerate launch` sets before calling the DeepSpeed launcher
        fields = [*defaults.deepspeed_config, *(["mixed_precision"] if mixed_precision_from_config else [])]
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    # The plugins parse the launch environment; FSDP asks for a GPU only to place synced weights.
    with (
        mock.patch.dict(os.environ, env),
        mock.patch("accelerate.utils.dataclasses.is_cuda_available", return_value=True),
        mock.patch("torch.cuda.current_device", return_value=0),
    ):
        if args.use_fsdp:
            from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

            plugin = FullyShardedDataParallelPlugin()
            assert plugin.fsdp_version == 1 and plugin.use_orig_params and plugin.sync_module_states
            assert (
                plugin.auto_wrap_policy is transformer_auto_wrap_policy and plugin.cpu_ram_efficient_loading
            )
            assert "SHARDED_STATE_DICT" in str(plugin.state_dict_type)  # the final save switches to FULL
        else:
            ds = DeepSpeedPlugin().deepspeed_config
            assert ds["zero_optimization"]["stage"] == 3
            assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
            assert ds["gradient_accumulation_steps"] == "auto"  # filled from --grad-accum by the Trainer
