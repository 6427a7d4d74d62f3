"""Batching in ``pyalign._core``: left and right padding with position ids, prompt-only batches
for generation, length-grouped batch order and its padding share, arrays shared with torch
without copies, truncation on character boundaries, and the interpreter lock released while
Rust works."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pyalign import _core
from tests.conftest import require_shared
from tests.data.test_core import BOS, EOS, PAD, write_tokenizer


@pytest.fixture
def tokenizer(tmp_path):
    config = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    return _core.Tokenizer(str(write_tokenizer(tmp_path / "words", config=config)))


@pytest.fixture
def pairs(tokenizer):
    return _core.PairDataset(
        tokenizer, ["hello", "how are"], ["world", "you"], ["you you", "hello"], max_length=16
    )


def test_left_padding_and_position_ids(pairs):
    right = pairs.collate([0, 1])
    left = pairs.collate([0, 1], padding_side="left")

    # Rows: chosen 0, chosen 1, rejected 0, rejected 1. Chosen 0 is BOS hello world EOS.
    assert right["input_ids"][0].tolist() == [BOS, 4, 5, EOS, PAD]
    assert right["position_ids"][0].tolist() == [0, 1, 2, 3, 0]
    assert left["input_ids"][0].tolist() == [PAD, BOS, 4, 5, EOS]
    assert left["attention_mask"][0].tolist() == [0, 1, 1, 1, 1]
    assert left["position_ids"][0].tolist() == [0, 0, 1, 2, 3]
    assert left["label_mask"][0].tolist() == [False, False, False, True, True]
    for name in ["input_ids", "attention_mask", "position_ids"]:
        assert left[name].dtype == np.int64
    # The same tokens carry labels in both paddings, and never prompt or padding tokens.
    for row in range(4):
        right_labels = right["input_ids"][row][right["label_mask"][row]].tolist()
        left_labels = left["input_ids"][row][left["label_mask"][row]].tolist()
        assert right_labels == left_labels
    with pytest.raises(ValueError, match='invalid padding_side "top"'):
        pairs.collate([0], padding_side="top")


def test_collate_prompts_left_padded(pairs):
    batch = pairs.collate_prompts([1, 0], pad_to_multiple_of=4)

    assert batch["input_ids"].tolist() == [[PAD, BOS, 6, 7], [PAD, PAD, BOS, 4]]
    assert batch["attention_mask"].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 0, 1, 2], [0, 0, 0, 1]]
    assert not batch["label_mask"].any()


def test_prompt_dataset(tokenizer):
    prompts = _core.PromptDataset(
        tokenizer, ["hello world how are you", "you"], max_prompt_length=3
    )

    assert len(prompts) == 2
    assert prompts.lengths().tolist() == [3, 2]
    # "hello world how are you" keeps its end, "are you", behind BOS; "you" is left-padded.
    batch = prompts.collate([0, 1])
    assert batch["input_ids"].tolist() == [[BOS, 7, 8], [PAD, BOS, 8]]
    right = prompts.collate([1], padding_side="right")
    assert right["input_ids"].tolist() == [[BOS, 8]]
    keep_start = _core.PromptDataset(
        tokenizer, ["hello world how"], max_prompt_length=2, truncation_mode="keep_start"
    )
    assert keep_start.collate([0])["input_ids"].tolist() == [[BOS, 4]]


def test_response_dataset_padding_sides(tokenizer):
    rows = _core.ResponseDataset(tokenizer, ["hello", "how are"], ["world", "you"], max_length=8)

    left = rows.collate([0, 1], padding_side="left")
    prompts = rows.collate_prompts([0, 1])
    mismatched = rows.collate_pairs([0, 1], [1, 0], padding_side="left")

    assert left["input_ids"].tolist() == [[PAD, BOS, 4, 5, EOS], [BOS, 6, 7, 8, EOS]]
    assert prompts["input_ids"].tolist() == [[PAD, BOS, 4], [BOS, 6, 7]]
    assert mismatched["input_ids"].tolist() == [[PAD, BOS, 4, 8, EOS], [BOS, 6, 7, 5, EOS]]


def test_batch_order_groups_and_reports_padding(tokenizer):
    words = ["hello", "world", "how", "are", "you"]
    prompts = [" ".join(words[: 1 + (i * 7) % 5] * (1 + i % 9)) for i in range(300)]
    dataset = _core.PairDataset(tokenizer, prompts, ["you"] * 300, ["hello"] * 300, max_length=64)

    grouped = dataset.batch_order(8, seed=3)
    shuffled = dataset.batch_order(8, seed=3, group_by_length=False)
    again = dataset.batch_order(8, seed=3)

    assert all(batch.dtype == np.int64 for batch in grouped)
    assert [batch.tolist() for batch in grouped] == [batch.tolist() for batch in again]
    assert sorted(np.concatenate(grouped).tolist()) == list(range(len(dataset)))
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(len(dataset)))
    grouped_padding = dataset.padding_fraction(grouped)
    shuffled_padding = dataset.padding_fraction(shuffled)
    assert 0.0 <= grouped_padding < shuffled_padding / 2
    # The first batch contains the longest pair.
    assert dataset.lengths()[grouped[0]].max() == dataset.lengths().max()
    # padding_fraction counts every slot of the batches that collate builds.
    batch = dataset.collate(grouped[1], pad_to_multiple_of=8)
    expected = float((batch["attention_mask"] == 0).mean())
    assert dataset.padding_fraction([grouped[1]], pad_to_multiple_of=8) == pytest.approx(expected)
    sequential = dataset.batch_order(7, shuffle=False, group_by_length=False, drop_last=True)
    assert [len(batch) for batch in sequential] == [7] * (len(dataset) // 7)
    with pytest.raises(ValueError, match="invalid batch_size 0"):
        dataset.batch_order(0)


def test_arrays_are_shared_with_torch(pairs):
    torch = pytest.importorskip("torch")

    batch = pairs.collate([0, 1])

    # The arrays wrap the buffers that Rust filled, and torch.from_numpy wraps them again.
    for name, array in batch.items():
        assert array.flags["C_CONTIGUOUS"], name
        assert array.flags["WRITEABLE"], name
        tensor = torch.from_numpy(array)
        assert tensor.data_ptr() == array.ctypes.data, name
    assert torch.from_numpy(batch["label_mask"]).dtype == torch.bool


def test_truncated_response_decodes_whole_characters():
    folder = require_shared("tokenizers/llama2")
    tokenizer = _core.Tokenizer(str(folder))
    text = "emoji 🙂🚀 and 中文字符 𝔘𝔫𝔦"
    full = tokenizer.encode(text, add_special_tokens=False)

    for max_length in range(3, len(full) + 3):
        dataset = _core.ResponseDataset(tokenizer, ["Hi"], [text], max_length=max_length)
        if len(dataset) == 0:
            assert dataset.drop_reasons == {"empty_after_truncation": 1}
            continue
        batch = dataset.collate([0])
        response = batch["input_ids"][0][batch["label_mask"][0]].tolist()
        decoded = tokenizer.decode(response)
        assert "\ufffd" not in decoded, max_length
        assert text.startswith(decoded.strip()), max_length


def test_interpreter_runs_during_tokenization():
    folder = require_shared("tokenizers/llama2")
    tokenizer = _core.Tokenizer(str(folder))
    text = "Once upon a time, there was a little girl named Lily. " * 20
    prompts = [text] * 6000
    finished = threading.Event()
    ticks = 0

    def build():
        _core.PairDataset(tokenizer, prompts, ["a"] * 6000, ["b"] * 6000, max_length=2048)
        finished.set()

    worker = threading.Thread(target=build)
    started = time.perf_counter()
    worker.start()
    while not finished.is_set():
        ticks += 1
        time.sleep(0.001)
    worker.join()

    # With the interpreter lock held for the whole build, this loop could not run at all.
    elapsed = time.perf_counter() - started
    if elapsed < 0.05:
        pytest.skip(f"the build took {elapsed:.3f} s, too short to observe the loop")
    assert ticks > 10, (ticks, elapsed)
