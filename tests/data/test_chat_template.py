"""Chat templates in ``pyalign._core``: rendering and token ids against transformers'
``apply_chat_template`` on both shared tokenizers, BOS kept once, the template found beside the
tokenizer, and the errors of bad templates and bad conversations."""

from __future__ import annotations

import json
import shutil

import pytest

from pyalign import _core
from tests.conftest import require_shared

BOS = 1

# In the style of Llama 2 chat: the template writes the BOS text and calls .strip().
LLAMA2_STYLE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = none %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first and system %}{% set content = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n'"
    " + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{{ '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

# ChatML, with block tags on their own lines as Hugging Face writes them; it emits no BOS.
CHATML = """{% for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}
{% endfor %}
{% if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{% endif %}"""

CONVERSATIONS = [
    [{"role": "user", "content": "Once upon a time"}],
    [
        {"role": "system", "content": "You tell stories."},
        {"role": "user", "content": "Hi there "},
        {"role": "assistant", "content": " Hello! "},
        {"role": "user", "content": "Ünïcödé 🙂, tell more"},
    ],
]


@pytest.fixture(params=["tokenizers/llama2", "models/stories260K"])
def tokenizer_pair(request):
    """The same shared tokenizer loaded by pyalign and by transformers."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("jinja2", reason="transformers renders chat templates with jinja2")
    folder = require_shared(request.param)
    reference = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), bos_token="<s>", eos_token="</s>"
    )
    return _core.Tokenizer(str(folder)), reference


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("template", [LLAMA2_STYLE, CHATML])
def test_rendering_matches_transformers(tokenizer_pair, template, conversation):
    tokenizer, reference = tokenizer_pair

    expected = reference.apply_chat_template(
        conversation, chat_template=template, add_generation_prompt=True, tokenize=False
    )

    assert tokenizer.apply_chat_template(conversation, chat_template=template) == expected
    assert tokenizer.apply_chat_template(json.dumps(conversation), chat_template=template) == (
        expected
    )


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("template", [LLAMA2_STYLE, CHATML])
def test_prompt_ids_match_transformers(tokenizer_pair, template, conversation):
    tokenizer, reference = tokenizer_pair
    expected = reference.apply_chat_template(
        conversation, chat_template=template, add_generation_prompt=True, tokenize=True
    )
    if hasattr(expected, "keys"):
        expected = expected["input_ids"]
    # transformers takes the template's text as it is. pyalign keeps its rule that a prompt
    # starts with one BOS, so a template that writes no BOS text gains one.
    if expected[:1] != [BOS]:
        expected = [BOS] + expected

    dataset = _core.PairDataset(
        tokenizer,
        [json.dumps(conversation)],
        [" The end."],
        ["No."],
        max_length=1024,
        chat_template=template,
    )
    batch = dataset.collate([0])

    prompt_length = int((~batch["label_mask"][0] & (batch["attention_mask"][0] == 1)).sum())
    assert batch["input_ids"][0, :prompt_length].tolist() == expected
    assert expected.count(BOS) == 1


def test_plain_prompt_becomes_user_message(tokenizer_pair):
    tokenizer, reference = tokenizer_pair
    expected = reference.apply_chat_template(
        [{"role": "user", "content": "Once upon a time"}],
        chat_template=LLAMA2_STYLE,
        add_generation_prompt=True,
        tokenize=False,
    )

    assert tokenizer.apply_chat_template("Once upon a time", chat_template=LLAMA2_STYLE) == (
        expected
    )


def test_template_from_tokenizer_config(tmp_path):
    folder = require_shared("tokenizers/llama2")
    local = tmp_path / "llama2"
    local.mkdir()
    shutil.copy(folder / "tokenizer.json", local / "tokenizer.json")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = LLAMA2_STYLE
    (local / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = _core.Tokenizer(str(local))

    dataset = _core.PairDataset(
        tokenizer, ["Hi"], ["Hello"], ["No"], max_length=64, chat_template=True
    )
    plain = _core.PairDataset(tokenizer, ["Hi"], ["Hello"], ["No"], max_length=64)

    assert tokenizer.chat_template == LLAMA2_STYLE
    prompt = dataset.collate([0])["input_ids"][0].tolist()
    rendered = tokenizer.encode("<s>[INST] Hi [/INST]", add_special_tokens=False)
    assert prompt[: len(rendered)] == rendered
    assert plain.collate([0])["input_ids"][0].tolist()[:2] == [BOS] + tokenizer.encode(
        "Hi", add_special_tokens=False
    )
    # A chat_template.jinja file beside tokenizer.json takes precedence.
    (local / "chat_template.jinja").write_text(CHATML)
    assert _core.Tokenizer(str(local)).chat_template == CHATML


def test_response_as_assistant_message(tokenizer_pair):
    tokenizer, _ = tokenizer_pair
    plain = _core.PairDataset(tokenizer, ["Hi"], ["Hello"], ["No"], 64, chat_template=CHATML)
    messages = _core.PairDataset(
        tokenizer,
        ['[{"role": "user", "content": "Hi"}]'],
        ['[{"role": "assistant", "content": "Hello"}]'],
        ['[{"role": "assistant", "content": "No"}]'],
        64,
        chat_template=CHATML,
    )

    assert messages.collate([0])["input_ids"].tolist() == plain.collate([0])["input_ids"].tolist()


def test_chat_template_errors(tokenizer_pair, tmp_path):
    tokenizer, _ = tokenizer_pair
    conversation = '[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]'

    with pytest.raises(ValueError, match="record 0: chat template: failed to render") as caught:
        _core.PairDataset(tokenizer, [conversation], ["x"], ["y"], 64, chat_template=LLAMA2_STYLE)
    assert "Conversation roles must alternate" in str(caught.value)
    with pytest.raises(ValueError, match="failed to compile the chat template"):
        _core.PairDataset(tokenizer, ["a"], ["x"], ["y"], 64, chat_template="{% for %}")
    with pytest.raises(ValueError, match="the tokenizer has no chat template"):
        _core.PairDataset(tokenizer, ["a"], ["x"], ["y"], 64, chat_template=True)
    with pytest.raises(TypeError, match="chat_template must be None, a bool or the template"):
        _core.PairDataset(tokenizer, ["a"], ["x"], ["y"], 64, chat_template=3)
    with pytest.raises(ValueError, match="invalid prompt of record 0: expected text, found a list"):
        _core.PairDataset(tokenizer, [conversation], ["x"], ["y"], 64)
    user_response = '[{"role": "user", "content": "x"}]'
    with pytest.raises(ValueError, match="invalid chosen of record 0: .*found role"):
        _core.PairDataset(tokenizer, ["a"], [user_response], ["y"], 64, chat_template=CHATML)


def test_chat_template_false_is_off(tokenizer_pair):
    tokenizer, _ = tokenizer_pair

    off = _core.PairDataset(tokenizer, ["Hi"], ["a"], ["b"], 64, chat_template=False)
    default = _core.PairDataset(tokenizer, ["Hi"], ["a"], ["b"], 64)

    assert off.collate([0])["input_ids"].tolist() == default.collate([0])["input_ids"].tolist()
