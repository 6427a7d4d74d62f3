"""Tests of the Rust extension ``pyalign._core``: the bindings, array dtypes and shapes, the
exception types and messages, and token ids against transformers on the shared tokenizers."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pytest

from pyalign import _core
from tests.conftest import require_shared

BOS, EOS, PAD = 1, 2, 3
WORDS = ["<unk>", "<s>", "</s>", "<pad>", "hello", "world", "how", "are", "you"]


def word_tokenizer_json(adds_bos: bool) -> dict:
    """Build a word-level tokenizer over WORDS whose post-processor prepends <s> if adds_bos."""
    added = [
        {
            "id": WORDS.index(token),
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for token in ["<s>", "</s>", "<pad>"]
    ]
    single = [{"Sequence": {"id": "A", "type_id": 0}}]
    if adds_bos:
        single.insert(0, {"SpecialToken": {"id": "<s>", "type_id": 0}})
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": single,
            "pair": single + [{"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS], "tokens": ["<s>"]}},
        },
        "decoder": None,
        "model": {
            "type": "WordLevel",
            "vocab": {word: id for id, word in enumerate(WORDS)},
            "unk_token": "<unk>",
        },
    }


def write_tokenizer(folder, adds_bos=False, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(word_tokenizer_json(adds_bos)))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def tokenizer(tmp_path):
    config = {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "pad_token": "<pad>"}
    return _core.Tokenizer(str(write_tokenizer(tmp_path / "words", config=config)))


# Tokenizer


def test_version_is_string():
    assert isinstance(_core.__version__, str)
    assert _core.__version__.count(".") == 2


def test_tokenizer_reads_config(tokenizer):
    assert tokenizer.bos_token_id == BOS
    assert tokenizer.eos_token_id == EOS
    assert tokenizer.pad_token_id == PAD
    assert tokenizer.vocab_size == len(WORDS)
    assert tokenizer.encode("hello world") == [4, 5]
    assert tokenizer.decode([BOS, 4, 5, EOS]) == "hello world"
    assert tokenizer.decode([BOS, 4], skip_special_tokens=False) == "<s> hello"


def test_tokenizer_accepts_json_file(tmp_path):
    folder = write_tokenizer(tmp_path / "words", config={"bos_token": "<s>"})

    tokenizer = _core.Tokenizer(str(folder / "tokenizer.json"))

    assert tokenizer.bos_token_id == BOS


def test_explicit_none_overrides_config(tmp_path):
    config = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    folder = write_tokenizer(tmp_path / "words", config=config)

    tokenizer = _core.Tokenizer(str(folder), bos_token=None, pad_token=None)

    assert tokenizer.bos_token_id is None
    assert tokenizer.eos_token_id == EOS
    # Without a padding token, padding falls back to EOS.
    assert tokenizer.pad_token_id == EOS


def test_pad_falls_back_to_zero(tmp_path):
    folder = write_tokenizer(tmp_path / "words")

    tokenizer = _core.Tokenizer(str(folder))

    assert tokenizer.bos_token_id is None
    assert tokenizer.eos_token_id is None
    assert tokenizer.pad_token_id == 0


def test_explicit_tokens(tmp_path):
    folder = write_tokenizer(tmp_path / "words")

    tokenizer = _core.Tokenizer(str(folder), bos_token="<s>", eos_token="</s>", pad_token="<pad>")

    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 3)


def test_tokenizer_errors(tmp_path):
    folder = write_tokenizer(tmp_path / "words", config={"eos_token": 7})

    with pytest.raises(FileNotFoundError, match="missing: not found, expected a tokenizer.json"):
        _core.Tokenizer(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty/tokenizer.json"):
        _core.Tokenizer(str(tmp_path / "empty"))
    with pytest.raises(KeyError, match="<bos>"):
        _core.Tokenizer(str(folder), bos_token="<bos>", eos_token=None)
    with pytest.raises(TypeError, match="eos_token"):
        _core.Tokenizer(str(folder))
    with pytest.raises(TypeError, match="must be a string or None"):
        _core.Tokenizer(str(folder), bos_token=1)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="failed to load the tokenizer"):
        _core.Tokenizer(str(tmp_path / "broken"))


def test_decode_rejects_bad_ids(tokenizer):
    with pytest.raises(ValueError, match="invalid token id 99"):
        tokenizer.decode([4, 99])
    with pytest.raises(ValueError, match="invalid token id -1"):
        tokenizer.decode([-1])


# read_table


def test_read_csv_quoting_and_bom(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes('\ufeffprompt,chosen\n"a, b","line 1\nline ""2"""\n'.encode())

    table = _core.read_table(str(path), ["prompt", "chosen"])

    assert table == {"prompt": ["a, b"], "chosen": ['line 1\nline "2"']}


def test_read_jsonl_value_types(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"a": "x", "b": true, "c": 1, "d": null}\n\n{"a": "y", "b": false, "c": 2.5, "d": ""}\n'
    )

    table = _core.read_table(str(path), ["a", "b", "c", "d"])

    assert table == {"a": ["x", "y"], "b": ["true", "false"], "c": ["1", "2.5"], "d": ["", ""]}


@pytest.mark.parametrize("name", ["rows.jsonl.gz", "rows.json.gz"])
def test_read_gzipped_json_lines(tmp_path, name):
    path = tmp_path / name
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.write('{"a": "x"}\n{"a": "y"}\n')

    assert _core.read_table(str(path), ["a"]) == {"a": ["x", "y"]}


def test_read_json_array(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"a": "x"}, {"a": 3}]))

    assert _core.read_table(str(path), ["a"]) == {"a": ["x", "3"]}


def test_missing_column_is_key_error(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen\nhi,there\n")

    with pytest.raises(KeyError) as caught:
        _core.read_table(str(path), ["prompt", "rejected"])

    message = caught.value.args[0]
    assert '"rejected"' in message
    assert str(path) in message
    assert '["prompt", "chosen"]' in message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("header.csv", b"a\n", "header row but no records"),
        ("blank.jsonl", b"\n\n", "the file is empty"),
        ("bad.csv", b"a\nx\n\xff\n", "line 3 is not valid UTF-8"),
        ("bad.jsonl", b'{"a": "x"}\n\xc3\x28\n', "line 2 is not valid UTF-8"),
        ("bad.jsonl", b'{"a": "x"}\n{"a": \n', "line 2: invalid JSON: EOF while parsing"),
        (
            "bad.jsonl",
            b'{"a": "x"}\n{a}\n',
            "line 2: invalid JSON at column 2: key must be a string",
        ),
        ("bad.jsonl", b'{"a": "x"}\n"text"\n', "line 2: expected a JSON object, found a string"),
        ("rows.txt", b"", "expected one of .csv, .csv.gz, .jsonl"),
        ("rows.parquet", b"PAR1 not a footer", "invalid Parquet"),
        ("rows.jsonl.gz", b"\x1f\x8b\x08\x00garbage", "rows.jsonl.gz"),
    ],
)
def test_read_errors_are_value_errors(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(ValueError) as caught:
        _core.read_table(str(path), ["a"])

    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_file_is_not_found(tmp_path):
    path = tmp_path / "missing.jsonl"

    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        _core.read_table(str(path), ["a"])


# PairDataset


def test_pair_collate_shapes_and_layout(tokenizer):
    dataset = _core.PairDataset(
        tokenizer, ["hello", "how"], ["world", "are you"], ["you you", "hello"], max_length=16
    )

    batch = dataset.collate([1, 0], pad_to_multiple_of=4)

    assert set(batch) == {"input_ids", "attention_mask", "label_mask", "position_ids"}
    assert batch["input_ids"].dtype == np.int64
    assert batch["attention_mask"].dtype == np.int64
    assert batch["label_mask"].dtype == np.bool_
    assert batch["input_ids"].shape == (4, 8)
    assert batch["input_ids"][0].tolist() == [1, 6, 7, 8, 2, PAD, PAD, PAD]
    assert batch["input_ids"][1].tolist() == [1, 4, 5, 2, PAD, PAD, PAD, PAD]
    assert batch["input_ids"][2].tolist() == [1, 6, 4, 2, PAD, PAD, PAD, PAD]
    assert batch["input_ids"][3].tolist() == [1, 4, 8, 8, 2, PAD, PAD, PAD]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert batch["label_mask"][0].tolist() == [False, False, True, True, True] + [False] * 3


def test_pair_metadata(tokenizer):
    dataset = _core.PairDataset(
        tokenizer,
        ["hello", "hello", "hello", "hello"],
        ["world", "", "how", "are"],
        ["you", "you", "how", "you"],
        max_length=16,
    )

    assert len(dataset) == 2
    assert dataset.num_dropped == 2
    assert dataset.drop_reasons == {"empty_chosen_response": 1, "identical_responses": 1}
    assert dataset.kept_indices.dtype == np.int64
    assert dataset.kept_indices.tolist() == [0, 3]
    assert dataset.lengths().dtype == np.int64
    assert dataset.lengths().tolist() == [4, 4]


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_collate_accepts_numpy_indices(tokenizer, dtype):
    dataset = _core.PairDataset(tokenizer, ["hello"] * 3, ["world"] * 3, ["you"] * 3, 8)

    batch = dataset.collate(np.array([2, 0], dtype=dtype))

    assert batch["input_ids"].shape == (4, 4)


def test_truncation_rules(tokenizer):
    dataset = _core.PairDataset(
        tokenizer,
        ["hello world how are you"],
        ["how are you"],
        ["you are how"],
        max_length=5,
        max_prompt_length=3,
        truncation_mode="keep_start",
    )

    batch = dataset.collate([0])

    # Prompt cut to BOS hello world, responses cut to the two tokens that still fit.
    assert batch["input_ids"].tolist() == [[1, 4, 5, 6, 7], [1, 4, 5, 8, 7]]
    assert batch["label_mask"][0].tolist() == [False, False, False, True, True]


def test_logs_reach_python_logging(tokenizer, caplog):
    caplog.set_level(logging.INFO, logger="pyalign")

    _core.PairDataset(tokenizer, ["hello"], ["world"], ["you"], 8)

    records = [record for record in caplog.records if record.name == "pyalign.batch"]
    assert any("tokenized 1 preference pairs" in record.getMessage() for record in records)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"max_length": 1}, "invalid max_length 1: expected at least 2"),
        ({"max_length": -4}, "invalid max_length -4"),
        ({"max_length": 8, "max_prompt_length": 0}, "invalid max_prompt_length 0"),
        ({"max_length": 8, "truncation_mode": "left"}, 'invalid truncation_mode "left"'),
    ],
)
def test_bad_limits_are_value_errors(tokenizer, arguments, expected):
    with pytest.raises(ValueError, match=expected):
        _core.PairDataset(tokenizer, ["hello"], ["world"], ["you"], **arguments)


def test_pair_argument_errors(tokenizer):
    with pytest.raises(ValueError, match="prompts 2, chosen 1, rejected 1"):
        _core.PairDataset(tokenizer, ["a", "b"], ["c"], ["d"], 8)

    dataset = _core.PairDataset(tokenizer, ["hello"], ["world"], ["you"], 8)
    with pytest.raises(ValueError, match=r"invalid index 1: expected an index .* in 0\.\.1"):
        dataset.collate([1])
    with pytest.raises(ValueError, match="invalid index -1"):
        dataset.collate(np.array([-1]))
    with pytest.raises(ValueError, match="invalid pad_to_multiple_of 0"):
        dataset.collate([0], pad_to_multiple_of=0)
    with pytest.raises(TypeError, match="indices must be"):
        dataset.collate("0")


# ResponseDataset


def test_response_collate_pairs(tokenizer):
    dataset = _core.ResponseDataset(
        tokenizer, ["hello world how", "you", "hello"], ["are", "how are you you", ""], max_length=6
    )

    assert len(dataset) == 2
    assert dataset.drop_reasons == {"empty_response": 1}
    assert dataset.kept_indices.tolist() == [0, 1]
    batch = dataset.collate([0, 1])
    assert batch["input_ids"].shape == (2, 6)
    assert batch["input_ids"][0].tolist() == [1, 4, 5, 6, 7, 2]

    mismatched = dataset.collate_pairs(np.array([0, 1]), [1, 0])

    assert mismatched["input_ids"].tolist() == [[1, 4, 5, 6, 6, 7], [1, 8, 7, 2, PAD, PAD]]
    assert mismatched["label_mask"].tolist() == [
        [False, False, False, False, True, True],
        [False, False, True, True, False, False],
    ]
    with pytest.raises(ValueError, match="prompt_indices 1, response_indices 2"):
        dataset.collate_pairs([0], [0, 1])


# convert_hh_rlhf


def write_hh_records(path):
    records = [
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello",
            "rejected": "\n\nHuman: Hi\n\nAssistant: No",
        },
        {"chosen": "\n\nHuman: Hi", "rejected": "\n\nHuman: Hi\n\nAssistant: No"},
    ]
    with gzip.open(path, "wt", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")


def test_convert_hh_rlhf_dpo(tmp_path):
    source = tmp_path / "hh.jsonl.gz"
    output = tmp_path / "pairs.csv"
    write_hh_records(source)

    summary = _core.convert_hh_rlhf(str(source), str(output), skip_bad_records=True)

    assert summary["read"] == 2
    assert summary["kept"] == 1
    assert summary["written"] == 1
    assert summary["skipped"] == 1
    assert summary["skip_reasons"] == {"no_chosen_assistant_turn": 1}
    assert summary["rows"] == {"prompt": ["Hi"], "chosen": ["Hello"], "rejected": ["No"]}
    table = _core.read_table(str(output), ["prompt", "chosen", "rejected"])
    assert table == summary["rows"]


def test_convert_hh_rlhf_malformed_is_value_error(tmp_path):
    source = tmp_path / "hh.jsonl.gz"
    write_hh_records(source)

    with pytest.raises(ValueError) as caught:
        _core.convert_hh_rlhf(str(source))

    message = str(caught.value)
    assert message.startswith(f"{source}: line 2: invalid HH-RLHF record: chosen does not end")
    assert "skip_bad_records" in message


def test_convert_hh_rlhf_kto(tmp_path):
    source = tmp_path / "hh.jsonl.gz"
    output = tmp_path / "rows.jsonl"
    write_hh_records(source)

    summary = _core.convert_hh_rlhf(str(source), str(output), format="kto", max_samples=1)

    assert summary["written"] == 2
    assert summary["rows"]["label"] == ["true", "false"]
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert lines[1] == {"prompt": "Hi", "response": "No", "label": False}


def test_convert_hh_rlhf_errors(tmp_path):
    source = tmp_path / "hh.jsonl.gz"
    write_hh_records(source)

    with pytest.raises(ValueError, match='invalid format "orpo"'):
        _core.convert_hh_rlhf(str(source), format="orpo")
    with pytest.raises(ValueError, match="expected one of .csv, .jsonl"):
        _core.convert_hh_rlhf(str(source), str(tmp_path / "out.txt"))
    # The output path is checked before the input is read.
    with pytest.raises(ValueError, match="out.txt: unsupported file extension"):
        _core.convert_hh_rlhf(str(tmp_path / "missing.jsonl"), str(tmp_path / "out.txt"))
    with pytest.raises(ValueError, match="invalid max_samples -1"):
        _core.convert_hh_rlhf(str(source), max_samples=-1)
    with pytest.raises(FileNotFoundError):
        _core.convert_hh_rlhf(str(tmp_path / "missing.jsonl"))


def test_convert_real_hh_rlhf():
    source = require_shared("data/hh-rlhf/harmless-base-test.jsonl.gz")

    summary = _core.convert_hh_rlhf(str(source))

    assert summary["read"] == 2312
    assert summary["kept"] + summary["skipped"] == summary["read"]
    assert summary["written"] == summary["kept"]
    assert len(summary["rows"]["prompt"]) == summary["kept"]


# Golden ids against transformers on the shared tokenizers

SHARED_TOKENIZERS = ["tokenizers/llama2", "models/stories260K"]
TEXTS = [
    "Hello world",
    "  leading and trailing spaces  ",
    "Once upon a time, there was a little girl named Lily.",
    "Ünïcödé, emoji 🙂 and 中文",
    "<s>Hi</s>",
    "tabs\tand\nnew lines",
    "",
]


@pytest.fixture(params=SHARED_TOKENIZERS)
def tokenizer_pair(request):
    """The same shared tokenizer loaded by pyalign and by transformers."""
    transformers = pytest.importorskip("transformers")
    folder = require_shared(request.param)
    reference = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), bos_token="<s>", eos_token="</s>"
    )
    return _core.Tokenizer(str(folder)), reference


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_transformers(tokenizer_pair, text):
    tokenizer, reference = tokenizer_pair

    assert tokenizer.encode(text) == reference.encode(text)
    assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(
        text, add_special_tokens=False
    )
    ids = reference.encode(text)
    assert tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=True)


def test_auto_tokenizer_agrees():
    transformers = pytest.importorskip("transformers")
    for relative in SHARED_TOKENIZERS:
        folder = require_shared(relative)
        reference = transformers.AutoTokenizer.from_pretrained(str(folder))
        tokenizer = _core.Tokenizer(str(folder))

        assert tokenizer.bos_token_id == reference.bos_token_id
        assert tokenizer.eos_token_id == reference.eos_token_id
        assert tokenizer.vocab_size == len(reference)
        assert tokenizer.encode(TEXTS[2]) == reference.encode(TEXTS[2])


@pytest.mark.parametrize("prompt", ["Once upon a time", "<s>Once upon a time", " <s> Once"])
def test_pair_ids_match_transformers(tokenizer_pair, prompt):
    tokenizer, reference = tokenizer_pair
    chosen, rejected = " there was a girl.", " a dog barked.</s>"

    dataset = _core.PairDataset(tokenizer, [prompt], [chosen], [rejected], max_length=256)
    batch = dataset.collate([0])

    # The prompt starts with one BOS however the tokenizer and the text supply it.
    prompt_ids = reference.encode(prompt)
    while prompt_ids[:2] == [BOS, BOS]:
        prompt_ids = prompt_ids[1:]
    if prompt_ids[:1] != [BOS]:
        prompt_ids = [BOS] + prompt_ids
    chosen_ids = reference.encode(chosen, add_special_tokens=False) + [EOS]
    rejected_ids = reference.encode(rejected, add_special_tokens=False)
    assert rejected_ids[-1] == EOS
    for row, response_ids in [(0, chosen_ids), (1, rejected_ids)]:
        length = len(prompt_ids) + len(response_ids)
        assert batch["input_ids"][row, :length].tolist() == prompt_ids + response_ids
        assert batch["label_mask"][row].tolist() == [False] * len(prompt_ids) + [True] * len(
            response_ids
        ) + [False] * (batch["input_ids"].shape[1] - length)
