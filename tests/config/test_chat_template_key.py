"""The preprocessing.chat_template key reaches the Rust tokenizer."""

import json

import pytest

from pyalign import _core
from pyalign.config import load_config
from pyalign.data import PreferenceColumns, tokenize_pairs
from pyalign.errors import ConfigError
from pyalign.models import build_tiny_preset

TEMPLATE = (
    "{% for message in messages %}[{{ message['role'] }}] {{ message['content'] }}\n{% endfor %}"
)


def config_with(**preprocessing):
    return load_config(
        {
            "base_model": "pyalign/tiny",
            "trainer": {"type": "dpo"},
            "input_features": [{"name": "prompt"}],
            "output_features": [{"name": "chosen"}],
            "preprocessing": preprocessing,
        }
    )


def test_chat_template_defaults_to_off():
    assert config_with()["preprocessing"]["chat_template"] is False


def test_chat_template_string_renders_prompt():
    config = config_with(chat_template=TEMPLATE)
    tokenizer = _core.Tokenizer(str(build_tiny_preset() / "tokenizer.json"))
    turns = json.dumps([{"role": "user", "content": "Hi?"}])
    table = {"prompt": [turns], "chosen": ["Hello."], "rejected": ["Go away."]}
    data = tokenize_pairs(
        table, PreferenceColumns.from_config(config), tokenizer, config["preprocessing"], "test"
    )
    batch = data.pairs.collate([0])
    prompt_ids = batch["input_ids"][0][~batch["label_mask"][0]].tolist()
    assert tokenizer.decode(prompt_ids, skip_special_tokens=True).startswith("[user] Hi?")


def test_chat_template_rejected_for_grpo():
    with pytest.raises(ConfigError, match="chat_template"):
        load_config(
            {
                "base_model": "pyalign/tiny",
                "trainer": {"type": "grpo", "reward_functions": [{"name": "length", "target": 20}]},
                "input_features": [{"name": "prompt"}],
                "preprocessing": {"chat_template": True},
            }
        )


def test_chat_template_wrong_type():
    with pytest.raises(ConfigError, match="true, false or a Jinja template string"):
        config_with(chat_template=3)
