"""Keys of one trainer type: accepted for it, rejected for the others, checked together."""

import pytest
import yaml

from pyalign import config as config_module
from pyalign import losses
from pyalign.config import dump_config, load_config
from pyalign.errors import ConfigError


def config_of(trainer_type, **trainer):
    config = {
        "base_model": "pyalign/tiny",
        "trainer": {"type": trainer_type, **trainer},
        "input_features": [{"name": "prompt", "type": "text"}],
    }
    if trainer_type == "kto":
        config["output_features"] = [{"name": "response", "type": "text"}]
    elif trainer_type == "grpo":
        config["trainer"].setdefault("reward_functions", ["exact_match"])
    else:
        config["output_features"] = [{"name": "chosen", "type": "text"}]
    return config


@pytest.mark.parametrize(
    "trainer",
    [
        {"type": "dpo"},
        {"type": "dpo", "loss_type": "simpo", "simpo_gamma": 1.0},
        {"type": "dpo", "loss_type": "robust", "label_smoothing": 0.2, "rpo_alpha": 0.5},
        {"type": "kto", "desirable_weight": 1.2},
        {"type": "orpo", "beta": 0.2},
        {"type": "grpo", "num_generations": 4, "batch_size": 8, "epsilon_high": 0.28},
    ],
    ids=lambda trainer: "-".join(str(value) for value in trainer.values()),
)
def test_saved_config_loads_again(trainer):
    settings = {key: value for key, value in trainer.items() if key != "type"}
    resolved = load_config(config_of(trainer["type"], **settings))
    assert load_config(yaml.safe_load(dump_config(resolved))) == resolved


@pytest.mark.parametrize(
    "trainer_type, key, value, applies_to",
    [
        ("dpo", "desirable_weight", 1.0, "'kto'"),
        ("orpo", "undesirable_weight", 1.0, "'kto'"),
        ("kto", "num_generations", 4, "'grpo'"),
        ("dpo", "reward_functions", ["exact_match"], "'grpo'"),
        ("orpo", "loss_type", "sigmoid", "'dpo' and 'grpo'"),
        ("kto", "simpo_gamma", 0.5, "'dpo'"),
        ("grpo", "label_smoothing", 0.1, "'dpo'"),
        ("orpo", "rpo_alpha", 1.0, "'dpo'"),
        ("dpo", "temperature", 0.7, "'grpo'"),
    ],
)
def test_trainer_key_of_other_type_rejected(trainer_type, key, value, applies_to):
    config = config_of(trainer_type, **{key: value})
    with pytest.raises(ConfigError) as error:
        load_config(config)
    message = str(error.value)
    assert f"'trainer.{key}' applies to trainer.type {applies_to} only" in message
    assert f"this config has trainer.type '{trainer_type}'" in message


@pytest.mark.parametrize(
    "trainer_type, key, applies_to",
    [
        ("kto", "rejected_column", "'dpo' and 'orpo'"),
        ("grpo", "rejected_column", "'dpo' and 'orpo'"),
        ("dpo", "label_column", "'kto'"),
        ("grpo", "max_length", "'dpo', 'kto' and 'orpo'"),
    ],
)
def test_preprocessing_key_of_other_type_rejected(trainer_type, key, applies_to):
    config = config_of(trainer_type)
    config["preprocessing"] = {key: 64 if key == "max_length" else "column"}
    with pytest.raises(ConfigError, match=f"'preprocessing.{key}' applies to trainer.type"):
        load_config(config)
    with pytest.raises(ConfigError, match=applies_to):
        load_config(config)


def test_grpo_rejects_output_features():
    config = config_of("grpo")
    config["output_features"] = [{"name": "answer"}]
    with pytest.raises(ConfigError, match="'output_features' applies to trainer.type 'dpo'"):
        load_config(config)


def test_kto_requires_output_feature():
    config = config_of("kto")
    del config["output_features"]
    with pytest.raises(ConfigError, match="'output_features' is required"):
        load_config(config)


def test_defaults_follow_the_trainer_type():
    assert load_config(config_of("grpo"))["trainer"]["beta"] == 0.0
    assert load_config(config_of("grpo"))["trainer"]["loss_type"] == "dapo"
    assert load_config(config_of("dpo"))["trainer"]["loss_type"] == "sigmoid"
    kto = load_config(config_of("kto"))
    assert kto["trainer"]["desirable_weight"] == 1.0
    assert kto["preprocessing"]["label_column"] == "label"
    assert "rejected_column" not in kto["preprocessing"]
    assert "loss_type" not in load_config(config_of("orpo"))["trainer"]


# DPO variants


def test_simpo_gamma_defaults_for_simpo_only():
    assert load_config(config_of("dpo", loss_type="simpo"))["trainer"]["simpo_gamma"] == 0.5
    assert load_config(config_of("dpo"))["trainer"]["simpo_gamma"] is None
    with pytest.raises(ConfigError, match="'trainer.simpo_gamma' applies to trainer.loss_type"):
        load_config(config_of("dpo", loss_type="ipo", simpo_gamma=0.5))


@pytest.mark.parametrize("loss_type", ["ipo", "hinge"])
def test_label_smoothing_rejected_where_unused(loss_type):
    with pytest.raises(ConfigError, match="'trainer.label_smoothing' applies to trainer.loss_type"):
        load_config(config_of("dpo", loss_type=loss_type, label_smoothing=0.1))


def test_label_smoothing_below_half():
    with pytest.raises(ConfigError, match="must be less than 0.5, got 0.5"):
        load_config(config_of("dpo", loss_type="robust", label_smoothing=0.5))


def test_loss_type_lists_follow_the_losses():
    assert config_module.DPO_LOSS_TYPES == losses.DPO_LOSS_TYPES
    assert config_module.REFERENCE_FREE_DPO_LOSS_TYPES == losses.REFERENCE_FREE_LOSS_TYPES
    assert config_module.GRPO_LOSS_TYPES == losses.GRPO_LOSS_TYPES
    from pyalign.losses.dpo import SMOOTHED_LOSS_TYPES

    assert config_module.SMOOTHED_DPO_LOSS_TYPES == SMOOTHED_LOSS_TYPES


# GRPO


@pytest.mark.parametrize("num_generations", [1, 0])
def test_num_generations_below_two_rejected(num_generations):
    with pytest.raises(ConfigError, match="'trainer.num_generations' must be at least 2"):
        load_config(config_of("grpo", num_generations=num_generations, batch_size=2))


@pytest.mark.parametrize("key", ["batch_size", "eval_batch_size"])
def test_batch_not_divisible_by_generations_rejected(key):
    trainer = {"num_generations": 4, "batch_size": 8, key: 6}
    with pytest.raises(ConfigError, match=f"'trainer.{key}' \\(6\\) must be a multiple"):
        load_config(config_of("grpo", **trainer))


def test_grpo_default_batch_size_is_one_group():
    assert load_config(config_of("grpo"))["trainer"]["batch_size"] == 8
    with pytest.raises(ConfigError, match="'trainer.batch_size' \\(8\\) must be a multiple"):
        load_config(config_of("grpo", num_generations=6))


def test_reward_functions_required_for_grpo():
    config = config_of("grpo", batch_size=8)
    del config["trainer"]["reward_functions"]
    with pytest.raises(ConfigError, match="'trainer.reward_functions' is required"):
        load_config(config)


def test_reward_function_forms_resolve():
    specs = ["exact_match", {"name": "regex_format", "pattern": "^####"}, "my.module:score"]
    resolved = load_config(config_of("grpo", batch_size=8, reward_functions=specs))
    assert resolved["trainer"]["reward_functions"] == [
        {"name": "exact_match", "answer_column": "answer"},
        {"name": "regex_format", "pattern": "^####"},
        {"name": "my.module:score"},
    ]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("exact", "has invalid value 'exact'; expected a built-in reward function"),
        ({"name": "regex_format"}, "'trainer.reward_functions\\[0\\].pattern' is required"),
        ({"name": "regex_format", "pattern": "("}, "is not a valid regular expression"),
        ({"name": "length"}, "'trainer.reward_functions\\[0\\].target' is required"),
        ({"name": "exact_match", "pattern": "x"}, "unknown config key"),
        ({"name": "mod:fn", "scale": 2}, "is not a parameter of the user reward function"),
        ({"pattern": "x"}, "must be a reward function name or a mapping with a 'name'"),
    ],
)
def test_invalid_reward_function_rejected(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config_of("grpo", batch_size=8, reward_functions=[spec]))


def test_reward_weights_match_functions():
    trainer = {
        "batch_size": 8,
        "reward_functions": ["exact_match", "mod:fn"],
        "reward_weights": [1],
    }
    with pytest.raises(ConfigError, match="has 1 weights for 2 reward functions"):
        load_config(config_of("grpo", **trainer))


def test_reward_file_resolves_against_config_folder(tmp_path):
    path = tmp_path / "sub" / "config.yaml"
    path.parent.mkdir()
    trainer = {"batch_size": 8, "reward_functions": ["rewards.py:score", {"name": "/abs.py:f"}]}
    path.write_text(yaml.safe_dump(config_of("grpo", **trainer)))
    names = [spec["name"] for spec in load_config(path)["trainer"]["reward_functions"]]
    assert names == [f"{path.parent / 'rewards.py'}:score", "/abs.py:f"]


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("scale_rewards", "std", "has invalid value 'std'"),
        ("loss_type", "sigmoid", "expected one of 'grpo', 'bnpo', 'dr_grpo', 'dapo'"),
        ("epsilon", 1.0, "must be less than 1.0"),
        ("top_p", 0.0, "must be greater than 0.0"),
        ("temperature", 0, "must be greater than 0.0"),
        ("beta", -0.1, "must be at least 0.0"),
        ("mask_truncated_completions", "yes", "must be true or false"),
        ("reward_weights", [1, "a"], "must be a list of numbers"),
    ],
)
def test_invalid_grpo_values(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config_of("grpo", batch_size=8, **{key: value}))
