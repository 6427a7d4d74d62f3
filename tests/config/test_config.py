import textwrap

import pytest

from pyalign.config import load_config
from pyalign.errors import ConfigError

ISSUE_CONFIG = """
model_type: llm
base_model: ../shared/models/stories260K
adapter:
  type: lora
  r: 16
  alpha: 32
  dropout: 0.05
trainer:
  type: dpo
  epochs: 1
  learning_rate: 5.0e-7
  batch_size: 2
  gradient_accumulation_steps: 8
  beta: 0.1
input_features:
  - name: prompt
    type: text
output_features:
  - name: chosen
    type: text
backend:
  type: local
"""


def minimal(**sections):
    config = {
        "base_model": "pyalign/tiny",
        "trainer": {"type": "dpo"},
        "input_features": [{"name": "prompt", "type": "text"}],
        "output_features": [{"name": "chosen", "type": "text"}],
    }
    config.update(sections)
    return config


def test_ludwig_style_config_accepted_as_written(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(ISSUE_CONFIG)
    config = load_config(path)
    assert config["adapter"] == {
        "type": "lora",
        "r": 16,
        "alpha": 32,
        "dropout": 0.05,
        "target_modules": None,
        "bias_type": "none",
    }
    assert config["trainer"]["learning_rate"] == 5.0e-7
    assert config["trainer"]["gradient_accumulation_steps"] == 8
    assert config["preprocessing"]["rejected_column"] == "rejected"
    assert config["backend"]["kernels"] == "native"


def test_unknown_key_names_path_and_nearest():
    with pytest.raises(ConfigError) as error:
        load_config(minimal(trainer={"type": "dpo", "learnig_rate": 1e-5}))
    message = str(error.value)
    assert "'trainer.learnig_rate'" in message
    assert "did you mean 'trainer.learning_rate'" in message


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown config key 'quantisation'"):
        load_config(minimal(quantisation={"bits": 4}))


def test_unsupported_ludwig_key_gives_reason():
    with pytest.raises(ConfigError, match="'quantization': 4- and 8-bit quantization is not"):
        load_config(minimal(quantization={"bits": 4}))


def test_wrong_type_names_path_and_expected_type():
    with pytest.raises(ConfigError) as error:
        load_config(minimal(trainer={"type": "dpo", "batch_size": "two"}))
    assert "'trainer.batch_size' must be an integer" in str(error.value)
    assert "'two'" in str(error.value)


def test_bool_is_not_an_integer():
    with pytest.raises(ConfigError, match="'trainer.epochs' must be an integer"):
        load_config(minimal(trainer={"type": "dpo", "epochs": True}))


def test_unknown_trainer_type_lists_valid_types():
    with pytest.raises(
        ConfigError,
        match="invalid value 'ppo'; expected one of 'dpo', 'kto', 'orpo', 'grpo'",
    ):
        load_config(minimal(trainer={"type": "ppo"}))


def test_missing_required_key():
    config = minimal()
    del config["base_model"]
    with pytest.raises(ConfigError, match="'base_model' is required"):
        load_config(config)


def test_exponent_without_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 5e-7 as the string "5e-7"; the config accepts it as the number.
    path = tmp_path / "config.yaml"
    path.write_text(ISSUE_CONFIG.replace("5.0e-7", "5e-7"))
    assert load_config(path)["trainer"]["learning_rate"] == pytest.approx(5e-7)


def test_out_of_range_value():
    with pytest.raises(ConfigError, match="'trainer.beta' must be greater than 0.0, got 0.0"):
        load_config(minimal(trainer={"type": "dpo", "beta": 0}))


def test_overrides_apply_before_validation():
    config = load_config(minimal(), ["trainer.max_steps=20", "adapter={type: lora, r: 4}"])
    assert config["trainer"]["max_steps"] == 20
    assert config["adapter"]["r"] == 4


def test_override_of_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="did you mean 'trainer.max_steps'"):
        load_config(minimal(), ["trainer.max_step=20"])


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(minimal(), ["trainer.max_steps"])


def test_dataset_paths_resolve_against_config_folder(tmp_path):
    path = tmp_path / "sub" / "config.yaml"
    path.parent.mkdir()
    path.write_text(ISSUE_CONFIG + "dataset: data/train.csv\n")
    assert load_config(path)["dataset"] == str(path.parent / "data" / "train.csv")


def test_two_output_features_are_rejected():
    features = [{"name": "chosen"}, {"name": "rejected"}]
    with pytest.raises(ConfigError, match="lists 2 features"):
        load_config(minimal(output_features=features))


def test_empty_config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent("# nothing\n"))
    with pytest.raises(ConfigError, match="the config file is empty"):
        load_config(path)
