"""Train a few steps end to end and load what was saved."""

import json
import logging

import pytest
import torch

from pyalign import AlignModel
from tests.conftest import REPO_ROOT, require_shared

QUICKSTART = REPO_ROOT / "examples" / "quickstart.yaml"


def tiny_config(**trainer):
    return {
        "model_type": "llm",
        "base_model": "pyalign/tiny",
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "trainer": {
            "type": "dpo",
            "max_steps": 2,
            "batch_size": 4,
            "learning_rate": 1e-3,
            **trainer,
        },
        "input_features": [{"name": "prompt", "type": "text"}],
        "output_features": [{"name": "chosen", "type": "text"}],
        "preprocessing": {"max_length": 128},
    }


def quickstart_data(name):
    return REPO_ROOT / "examples" / "data" / f"quickstart_{name}.jsonl"


def test_quickstart_config_trains_and_saves_loadable_adapter(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AlignModel(QUICKSTART, overrides=("trainer.max_steps=3", "trainer.logging_steps=1"))
    stats, preprocessed, output_dir = model.train(output_directory=tmp_path)

    assert output_dir == tmp_path / "experiment_run"
    assert len(preprocessed["train"]) == 256
    assert len(preprocessed["validation"]) == 64
    assert [record["step"] for record in stats["train"]] == [1, 2, 3]
    for name in (
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "learning_rate",
    ):
        assert name in stats["train"][-1], name
        assert f"eval/{name}" in stats["eval"][-1] or name == "learning_rate", name
    assert stats["eval"][0]["step"] == 0
    assert stats["eval"][-1]["step"] == 3

    model_dir = output_dir / "model"
    assert (model_dir / "adapter_config.json").is_file()
    assert (output_dir / "config.yaml").is_file()
    saved_stats = json.loads((output_dir / "training_statistics.json").read_text())
    assert saved_stats["train"] == stats["train"]

    adapter_config = json.loads((model_dir / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(adapter_config["base_model_name_or_path"])
    loaded = PeftModel.from_pretrained(base, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer("How do I make tea?", return_tensors="pt")["input_ids"]
    assert torch.isfinite(loaded(input_ids=ids).logits).all()


def test_second_run_does_not_overwrite_first(tmp_path):
    config = tiny_config(max_steps=1)
    _, _, first = AlignModel(config).train(quickstart_data("validation"), output_directory=tmp_path)
    _, _, second = AlignModel(config).train(
        quickstart_data("validation"), output_directory=tmp_path
    )
    assert first.name == "experiment_run"
    assert second.name == "experiment_run_1"
    assert (first / "model" / "adapter_model.safetensors").is_file()


def test_full_fine_tuning_saves_full_weights_and_keeps_reference_frozen(tmp_path):
    from transformers import AutoModelForCausalLM

    config = tiny_config(max_steps=2, learning_rate=1e-2)
    config["adapter"] = None
    model = AlignModel(config)
    stats, _, output_dir = model.train(
        quickstart_data("train"), quickstart_data("validation"), output_directory=tmp_path
    )
    loaded = AutoModelForCausalLM.from_pretrained(output_dir / "model")
    trained_state = model.model.state_dict()
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, trained_state[name])
    # The reference is the untrained model, so rewards start at exactly zero at step 0 and move.
    assert stats["eval"][0]["eval/rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert stats["eval"][-1]["eval/rewards/margins"] != pytest.approx(0.0, abs=1e-6)


def test_startup_log_names_backends(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    AlignModel(tiny_config(max_steps=1)).train(
        quickstart_data("validation"), output_directory=tmp_path
    )
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("data backend: pyalign._core") for message in messages)
    op_lines = [message for message in messages if message.startswith("op backend:")]
    assert op_lines and "native" in op_lines[0]


def test_plain_torch_ops_only_when_selected_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    config = tiny_config(max_steps=1)
    config["backend"] = {"type": "local", "kernels": "torch"}
    AlignModel(config).train(quickstart_data("validation"), output_directory=tmp_path)
    op_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("op backend:")]
    assert op_lines and "plain PyTorch" in op_lines[0]


def test_validation_fraction_splits_dataset(tmp_path):
    config = tiny_config(max_steps=1)
    config["preprocessing"]["validation_fraction"] = 0.25
    _, preprocessed, _ = AlignModel(config).train(
        quickstart_data("validation"), output_directory=tmp_path
    )
    assert len(preprocessed["validation"]) == 16
    assert len(preprocessed["train"]) == 48


def test_stories260k_lora_trains_and_adapter_loads(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model_dir = require_shared("models/stories260K")
    config = tiny_config(max_steps=2)
    config["base_model"] = str(model_dir)
    _, _, output_dir = AlignModel(config).train(
        quickstart_data("validation"), output_directory=tmp_path
    )
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    loaded = PeftModel.from_pretrained(base, output_dir / "model")
    assert any("lora" in name for name, _ in loaded.named_parameters())
