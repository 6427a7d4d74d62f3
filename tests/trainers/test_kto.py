"""The KTO trainer's wiring: labels, mismatched KL pairs, odd and single-class batches."""

import logging
import math

import numpy as np
import pytest
import torch

from pyalign import AlignModel
from pyalign.data import kl_partner_indices, parse_labels
from pyalign.errors import DataError
from pyalign.trainers import KTOTrainer
from pyalign.trainers.kto import warn_about_weighted_ratio
from tests.trainers.common import build, config_for, kto_rows, write_jsonl


@pytest.mark.parametrize(
    "value, expected",
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        (" yes ", True),
        ("Yes", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("NO", False),
        ("0", False),
    ],
)
def test_label_values_accepted(value, expected):
    assert parse_labels([value], "data.csv", "label") == [expected]


@pytest.mark.parametrize("value", ["maybe", "", "2", "1.0", "t", "null"])
def test_label_values_rejected_with_record(value):
    with pytest.raises(DataError) as error:
        parse_labels(["true", value], "data.csv", "label")
    message = str(error.value)
    assert "record 2" in message
    assert "column 'label'" in message
    assert repr(value) in message


def test_json_booleans_and_numbers_read_as_labels(tmp_path):
    rows = [
        {"prompt": "Hi?", "response": "Hello.", "label": True},
        {"prompt": "Hi?", "response": "Go away.", "label": 0},
        {"prompt": "Hi?", "response": "Hey!", "label": "Yes"},
    ]
    config, _, data, _ = build(config_for("kto"), write_jsonl(tmp_path / "kto.jsonl", rows))
    assert data["train"].labels.tolist() == [True, False, True]


def test_invalid_label_stops_before_training(tmp_path):
    rows = kto_rows(2) + [{"prompt": "Hi?", "response": "Hello.", "label": "perhaps"}]
    dataset = write_jsonl(tmp_path / "kto.jsonl", rows)
    with pytest.raises(DataError, match="record 5: column 'label' has invalid label 'perhaps'"):
        AlignModel(config_for("kto")).train(dataset, output_directory=tmp_path)


def test_label_column_from_config(tmp_path):
    rows = [{"prompt": "Hi?", "response": "Hello.", "good": "yes"}] * 2
    config = config_for("kto")
    config["preprocessing"]["label_column"] = "good"
    _, _, data, _ = build(config, write_jsonl(tmp_path / "kto.jsonl", rows))
    assert data["train"].labels.tolist() == [True, True]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 7])
def test_kl_partners_never_own_row(batch_size):
    indices = np.arange(10, 10 + batch_size)
    partners = kl_partner_indices(indices, num_rows=20)
    assert partners.shape == indices.shape
    assert (partners != indices).all()
    if batch_size >= 2:
        # Shifted by one inside the batch: every response is used once.
        assert sorted(partners.tolist()) == sorted(indices.tolist())


def test_kl_batch_joins_prompt_with_partner_response(tmp_path):
    rows = [
        {"prompt": "Ask one?", "response": "Answer one.", "label": True},
        {"prompt": "Question two, longer?", "response": "Second answer here.", "label": False},
        {"prompt": "Three?", "response": "Third.", "label": True},
    ]
    _, _, data, _ = build(config_for("kto"), write_jsonl(tmp_path / "kto.jsonl", rows))
    batch = next(data["train"].batches(3, shuffle=False))
    partners = kl_partner_indices(np.arange(3), 3)

    def tokens(prefix, row, response):
        ids = batch[prefix + "input_ids"][row]
        mask = batch[prefix + "label_mask"][row] if response else ~batch[prefix + "label_mask"][row]
        real = batch[prefix + "attention_mask"][row].bool()
        return ids[mask & real].tolist()

    for row in range(3):
        assert tokens("kl_", row, response=False) == tokens("", row, response=False)
        assert tokens("kl_", row, response=True) == tokens("", int(partners[row]), response=True)
        assert tokens("kl_", row, response=True) != tokens("", row, response=True)


def _trainer(tmp_path, rows, **trainer):
    config = config_for("kto", **trainer)
    config, model, data, device = build(config, write_jsonl(tmp_path / "kto.jsonl", rows))
    return KTOTrainer(config, model, data["train"], data.get("validation"), device)


def _assert_finite(record):
    for name, value in record.items():
        assert math.isfinite(value), (name, value)


def test_odd_batch_sizes_train(tmp_path):
    # 7 rows in batches of 3: micro-batches of 3, 3 and 1 (the last pairs with another row).
    trainer = _trainer(tmp_path, kto_rows(4)[:7], batch_size=3, max_steps=None, epochs=1)
    assert trainer.total_steps == 3
    statistics = trainer.train()
    assert len(statistics.train) == 3
    for record in statistics.train:
        _assert_finite(record)


def test_single_class_batch_omits_missing_metrics(tmp_path):
    rows = [row for row in kto_rows(6) if row["label"]]
    trainer = _trainer(tmp_path, rows, batch_size=3)
    record = trainer.train().train[-1]
    _assert_finite(record)
    assert "rewards/chosen" in record
    assert "rewards/rejected" not in record
    assert "logps/rejected" not in record
    assert "rewards/margins" not in record
    assert record["count/rejected"] == 0


def test_undesirable_only_batch(tmp_path):
    rows = [row for row in kto_rows(6) if not row["label"]]
    record = _trainer(tmp_path, rows, batch_size=3).train().train[-1]
    _assert_finite(record)
    assert "rewards/rejected" in record
    assert "rewards/chosen" not in record


def test_mixed_step_reports_margin(tmp_path):
    record = _trainer(tmp_path, kto_rows(8), batch_size=4, max_steps=1).train().train[-1]
    assert record["count/chosen"] + record["count/rejected"] == 4
    assert record["rewards/margins"] == pytest.approx(
        record["rewards/chosen"] - record["rewards/rejected"]
    )


def test_kl_uses_mismatched_pairs_and_reference(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, kto_rows(4), batch_size=4, max_steps=1)
    seen = []
    original = trainer._logps

    def spy(model, batch, prefix):
        seen.append((prefix, torch.is_grad_enabled()))
        return original(model, batch, prefix)

    monkeypatch.setattr(trainer, "_logps", spy)
    trainer.train()
    # One training batch: policy (with gradient), policy on KL pairs, reference on both.
    assert seen[:4] == [("", True), ("kl_", False), ("", False), ("kl_", False)]


def test_weighted_ratio_warning_names_numbers(caplog):
    caplog.set_level(logging.WARNING)
    warn_about_weighted_ratio(10, 30, 1.0, 1.0)
    messages = [record.getMessage() for record in caplog.records]
    assert any("0.333" in message and "10 desirable" in message for message in messages)


def test_weighted_ratio_in_range_is_quiet(caplog):
    caplog.set_level(logging.WARNING)
    warn_about_weighted_ratio(30, 25, 1.0, 1.0)  # 1.2, inside [1, 4/3]
    assert not caplog.records


def test_single_class_dataset_warns(caplog):
    caplog.set_level(logging.WARNING)
    warn_about_weighted_ratio(12, 0, 1.0, 1.0)
    assert any("no undesirable rows" in record.getMessage() for record in caplog.records)
