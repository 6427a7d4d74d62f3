"""Each trainer type trains a few steps from ``pyalign train`` and saves a model that loads.

The model is stories260K when the test assets are present, else the built-in ``pyalign/tiny``.
"""

import json

import pytest
import torch
import yaml
from click.testing import CliRunner

from pyalign import AlignModel
from pyalign.cli import main
from tests.trainers.common import (
    QUICKSTART_TRAIN,
    QUICKSTART_VALIDATION,
    STORY_PROMPTS,
    config_for,
    kto_rows,
    tiny_base_model,
    write_jsonl,
)


def load_saved_model(output_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = output_dir / "model"
    adapter_config = json.loads((model_dir / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(adapter_config["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, model_dir)
    ids = AutoTokenizer.from_pretrained(model_dir)("Once upon a time", return_tensors="pt")
    assert torch.isfinite(model(input_ids=ids["input_ids"]).logits).all()
    return model


def run_cli(tmp_path, config, *args):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(
        main, ["train", str(config_path), "--output_directory", str(tmp_path / "results"), *args]
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "results" / "experiment_run"


def test_kto_from_command_line(tmp_path):
    dataset = write_jsonl(tmp_path / "kto.jsonl", kto_rows(24))
    config = config_for("kto", tiny_base_model(), max_steps=3, eval_steps=3, batch_size=5)
    config["preprocessing"]["validation_fraction"] = 0.25
    output_dir = run_cli(tmp_path, config, "--dataset", str(dataset))

    statistics = json.loads((output_dir / "training_statistics.json").read_text())
    assert [record["step"] for record in statistics["train"]] == [1, 2, 3]
    assert [record["step"] for record in statistics["eval"]] == [0, 3]
    assert statistics["summary"]["trainer_type"] == "kto"
    assert statistics["summary"]["train_rows"] == 36
    for name in ("eval/loss", "eval/kl", "eval/rewards/chosen", "eval/rewards/rejected"):
        assert name in statistics["eval"][-1], name
    load_saved_model(output_dir)


def test_orpo_trains_and_saves(tmp_path):
    config = config_for("orpo", tiny_base_model(), max_steps=3, eval_steps=3)
    stats, _, output_dir = AlignModel(config).train(
        QUICKSTART_VALIDATION, QUICKSTART_VALIDATION, output_directory=tmp_path
    )
    assert stats["summary"]["reference_model"] is False
    assert stats["eval"][-1]["eval/loss"] < stats["eval"][0]["eval/loss"]
    load_saved_model(output_dir)


@pytest.mark.parametrize("loss_type", ["ipo", "simpo"])
def test_dpo_variant_trains_and_saves(tmp_path, loss_type):
    config = config_for("dpo", tiny_base_model(), max_steps=2, loss_type=loss_type)
    stats, _, output_dir = AlignModel(config).train(QUICKSTART_TRAIN, output_directory=tmp_path)
    assert stats["summary"]["reference_model"] is (loss_type == "ipo")
    saved = yaml.safe_load((output_dir / "config.yaml").read_text())
    assert saved["trainer"]["loss_type"] == loss_type
    load_saved_model(output_dir)


def test_grpo_from_command_line(tmp_path):
    config = config_for(
        "grpo",
        tiny_base_model(),
        max_steps=2,
        batch_size=8,
        num_generations=4,
        max_completion_length=12,
        beta=0.05,
        reward_functions=[
            {"name": "regex_format", "pattern": "the"},
            {"name": "length", "target": 6},
        ],
        reward_weights=[1.0, 0.5],
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(STORY_PROMPTS.read_text().splitlines(keepends=True)[:8]))
    output_dir = run_cli(
        tmp_path, config, "--dataset", str(prompts), "--validation_set", str(prompts)
    )

    statistics = json.loads((output_dir / "training_statistics.json").read_text())
    record = statistics["train"][-1]
    for name in (
        "reward",
        "rewards/regex_format/mean",
        "rewards/regex_format/std",
        "rewards/length/mean",
        "completions/mean_length",
        "clip_ratio/region_mean",
        "kl",
        "entropy",
    ):
        assert name in record, name
    assert "eval/reward" in statistics["eval"][0]
    assert statistics["summary"]["train_prompts"] == 8
    load_saved_model(output_dir)
