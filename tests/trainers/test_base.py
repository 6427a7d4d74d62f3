"""The shared loop: metric sinks, metric averaging and the statistics layout."""

import pytest

from pyalign.trainers import DPOTrainer
from pyalign.trainers.base import MetricAccumulator
from tests.trainers.common import QUICKSTART_VALIDATION, build, config_for


def test_metric_sinks_receive_every_logged_record():
    config, model, data, device = build(
        config_for("dpo", max_steps=3, logging_steps=2, eval_steps=2),
        QUICKSTART_VALIDATION,
        QUICKSTART_VALIDATION,
    )
    received = []
    trainer = DPOTrainer(
        config,
        model,
        data["train"],
        data["validation"],
        device,
        metric_sinks=[lambda kind, record: received.append((kind, record))],
    )
    statistics = trainer.train()

    train_records = [record for kind, record in received if kind == "train"]
    eval_records = [record for kind, record in received if kind == "eval"]
    assert train_records == statistics.train
    assert eval_records == statistics.eval
    assert [record["step"] for record in train_records] == [2, 3]
    assert [record["step"] for record in eval_records] == [0, 2, 3]
    assert {kind for kind, _ in received} == {"train", "eval"}


def test_statistics_layout():
    config, model, data, device = build(config_for("dpo", max_steps=1), QUICKSTART_VALIDATION)
    statistics = DPOTrainer(config, model, data["train"], None, device).train().to_dict()
    assert set(statistics) == {"train", "eval", "summary"}
    summary = statistics["summary"]
    assert summary["total_steps"] == 1
    assert summary["train_pairs"] == len(data["train"])
    assert summary["eval_pairs"] == 0
    assert summary["peak_rss_bytes"] > 0


def test_accumulator_weights_counts_and_extremes():
    accumulator = MetricAccumulator()
    accumulator.add({"loss": 1.0, "count/x": 2, "ratio_min": 0.5, "ratio_max": 0.5}, weight=1)
    accumulator.add({"loss": 4.0, "count/x": 3, "ratio_min": 0.1, "ratio_max": 0.9}, weight=3)
    accumulator.add({"partial": 7.0}, weight=4, metric_weights={"partial": 0})
    record = accumulator.result()
    assert record["loss"] == pytest.approx((1.0 + 4.0 * 3) / 4)
    assert record["count/x"] == 5
    assert record["ratio_min"] == 0.1
    assert record["ratio_max"] == 0.9
    assert "partial" not in record
