"""Saving, reloading, merging and exporting model folders; the model card; generation."""

import json

import pytest
import torch
from click.testing import CliRunner

from pyalign import AlignModel
from pyalign.cli import main
from pyalign.export import export_model, saved_embedding_rows
from pyalign.models import apply_adapter, load_model, resolve_base_model
from tests.conftest import require_shared

ADDED_TOKENS = ["<|im_start|>", "<|im_end|>"]
PAD_TOKEN = "<|pad|>"
STATISTICS = {
    "train": [
        {"step": 1, "epoch": 0, "loss": 0.6931, "rewards/accuracies": 0.25},
        {"step": 2, "epoch": 0, "loss": 0.5123, "rewards/accuracies": 0.875},
    ],
    "eval": [
        {"step": 0, "eval/loss": 0.6931},
        {"step": 2, "eval/loss": 0.6012, "eval/rewards/accuracies": 0.8125},
    ],
    "summary": {
        "total_steps": 2,
        "train_pairs": 256,
        "eval_pairs": 64,
        "dataset": "/data/pairs/train.csv",
        "validation_set": "/data/pairs/test.csv",
    },
}


def tiny_config(adapter=True):
    return {
        "model_type": "llm",
        "base_model": "pyalign/tiny",
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0} if adapter else None,
        "trainer": {"type": "dpo", "beta": 0.25, "learning_rate": 1e-3},
        "input_features": [{"name": "prompt", "type": "text"}],
        "output_features": [{"name": "chosen", "type": "text"}],
    }


def randomise_lora(model, seed=0):
    """Give the LoRA B matrices non-zero values, as training would, so the adapter matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def save_run(tmp_path, model, tokenizer=None, adapter=True):
    """Save ``model`` as ``AlignModel.train`` does and return the run folder."""
    align = AlignModel(tiny_config(adapter))
    align.model = model
    align.tokenizer = tokenizer
    run_dir = tmp_path / "run"
    align.save(run_dir, resolve_base_model("pyalign/tiny"), STATISTICS)
    return run_dir


def logits(model, input_ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits


@pytest.fixture
def adapter_run(tmp_path):
    base_path = resolve_base_model("pyalign/tiny")
    model = apply_adapter(
        load_model(base_path),
        {**tiny_config()["adapter"], "target_modules": None, "bias_type": "none"},
    )
    randomise_lora(model)
    return model, save_run(tmp_path, model)


def test_merge_keeps_adapter_logits(adapter_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, run_dir = adapter_run
    output = tmp_path / "merged"
    result = CliRunner().invoke(
        main, ["export", str(run_dir / "model"), "--merge", "-o", str(output)]
    )
    assert result.exit_code == 0, result.output

    base = AutoModelForCausalLM.from_pretrained(resolve_base_model("pyalign/tiny"))
    with_adapter = PeftModel.from_pretrained(base, run_dir / "model")
    merged = AutoModelForCausalLM.from_pretrained(output)
    input_ids = torch.tensor([[0, 40, 77, 101, 33, 90, 1]])
    torch.testing.assert_close(logits(merged, input_ids), logits(with_adapter, input_ids))
    # The adapter changes the output, so the comparison above is not between two base models.
    plain = AutoModelForCausalLM.from_pretrained(resolve_base_model("pyalign/tiny"))
    assert not torch.allclose(logits(plain, input_ids), logits(merged, input_ids))


def test_merged_folder_has_no_adapter_files(adapter_run, tmp_path):
    _, run_dir = adapter_run
    output = export_model(run_dir, tmp_path / "merged", merge=True)

    names = {path.name for path in output.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert not any(name.startswith("adapter_") for name in names)
    card = (output / "README.md").read_text()
    assert "library_name: transformers" in card
    assert "merged" in card


def test_added_tokens_survive_save_reload_and_merge(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pyalign import _core

    base_path = resolve_base_model("pyalign/tiny")
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base_vocab = len(tokenizer)
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.add_tokens(ADDED_TOKENS, special_tokens=True)
    assert len(tokenizer) == base_vocab + 3

    model = load_model(base_path)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[base_vocab:] = torch.randn(3, 64) * 0.5
    model = apply_adapter(
        model,
        {
            "type": "lora",
            "r": 4,
            "alpha": 8,
            "dropout": 0.0,
            "target_modules": None,
            "bias_type": "none",
        },
    )
    randomise_lora(model)
    text = f"{ADDED_TOKENS[0]}user Hi{ADDED_TOKENS[1]}{PAD_TOKEN}"
    input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert (input_ids >= base_vocab).sum() == 3
    expected = logits(model, input_ids)
    run_dir = save_run(tmp_path, model, tokenizer)

    # Saved: the adapter stores the resized embedding, the tokenizer the added tokens.
    model_dir = run_dir / "model"
    assert saved_embedding_rows(model_dir, load_model(base_path)) == base_vocab + 3
    saved_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert len(saved_tokenizer) == base_vocab + 3
    assert saved_tokenizer.pad_token == PAD_TOKEN
    assert _core.Tokenizer(str(model_dir / "tokenizer.json")).encode(ADDED_TOKENS[0], False) == [
        tokenizer.convert_tokens_to_ids(ADDED_TOKENS[0])
    ]

    # Reloaded: the same logits, new-token rows included.
    loaded = AlignModel.load(run_dir)
    assert loaded.model.get_input_embeddings().weight.shape[0] == base_vocab + 3
    torch.testing.assert_close(logits(loaded.model, input_ids), expected)

    # Merged: full weights of the resized vocabulary and the same logits.
    output = export_model(model_dir, tmp_path / "merged", merge=True)
    merged = AutoModelForCausalLM.from_pretrained(output)
    assert merged.config.vocab_size == base_vocab + 3
    torch.testing.assert_close(logits(merged, input_ids), expected)
    merged_tokenizer = AutoTokenizer.from_pretrained(output)
    assert merged_tokenizer.convert_tokens_to_ids(ADDED_TOKENS) == tokenizer.convert_tokens_to_ids(
        ADDED_TOKENS
    )
    assert merged_tokenizer.pad_token == PAD_TOKEN


def test_full_weights_saved_as_safetensors_with_card(tmp_path):
    model = load_model(resolve_base_model("pyalign/tiny"))
    run_dir = save_run(tmp_path, model, adapter=False)
    names = {path.name for path in (run_dir / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert "library_name: transformers" in (run_dir / "model" / "README.md").read_text()

    # Nothing to merge: export copies the folder.
    output = export_model(run_dir / "model", tmp_path / "out", merge=True)
    assert {path.name for path in output.iterdir()} == names


def test_model_card_names_method_and_metrics(adapter_run):
    _, run_dir = adapter_run
    card = (run_dir / "model" / "README.md").read_text()

    assert card.startswith("---\nlibrary_name: peft\n")
    assert "- dpo" in card
    assert "by DPO" in card
    assert "| `method` | DPO |" in card
    assert "| `trainer.beta` | 0.25 |" in card
    assert "| `adapter.r` | 4 |" in card
    assert "| metric | train (step 2) | held-out (step 2) |" in card
    assert "| `loss` | 0.5123 | 0.6012 |" in card
    assert "| `rewards/accuracies` | 0.875 | 0.8125 |" in card
    # Only file names of the data, never the local paths.
    assert "- training: `train.csv`, 256 pairs" in card
    assert "- held-out: `test.csv`, 64 pairs" in card
    assert "/data/pairs" not in card
    # A local base model is no hub id, so the metadata names none.
    assert "base_model:" not in card.split("---")[1]


def test_export_without_merge_copies_adapter(adapter_run, tmp_path):
    _, run_dir = adapter_run
    output = export_model(run_dir, tmp_path / "copy")
    assert sorted(path.name for path in output.iterdir()) == sorted(
        path.name for path in (run_dir / "model").iterdir()
    )


def test_export_into_non_empty_folder(adapter_run, tmp_path):
    _, run_dir = adapter_run
    output = tmp_path / "taken"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    result = CliRunner().invoke(
        main, ["export", str(run_dir / "model"), "--merge", "-o", str(output)]
    )
    assert result.exit_code == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "taken" in line
    assert "not empty" in line
    assert (output / "keep.txt").read_text() == "mine"


def test_load_and_generate_pads_on_the_left(adapter_run):
    _, run_dir = adapter_run
    loaded = AlignModel.load(run_dir / "model")
    prompts = ["How do I make tea?", "Hi"]
    together = loaded.generate(prompts, max_new_tokens=8)
    alone = [loaded.generate(prompt, max_new_tokens=8)[0] for prompt in prompts]

    assert len(together) == 2
    assert all(isinstance(text, str) for text in together)
    assert together == alone
    assert loaded.config["trainer"]["type"] == "dpo"


def test_generate_continues_story_with_stories260k(tmp_path):
    model_dir = require_shared("models/stories260K")
    config = tiny_config()
    config["base_model"] = str(model_dir)
    model = apply_adapter(
        load_model(str(model_dir)),
        {**config["adapter"], "target_modules": None, "bias_type": "none"},
    )
    align = AlignModel(config)
    align.model = model
    align.save(tmp_path / "run", str(model_dir), STATISTICS)

    (completion,) = AlignModel.load(tmp_path / "run").generate(
        ["Once upon a time"], max_new_tokens=16
    )
    # LoRA starts as the identity, so this is the base model's greedy continuation.
    assert completion.startswith(", there was a little girl named Lily")
    assert json.loads((tmp_path / "run" / "model" / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ]
