"""The training report PNG and the TensorBoard metric sink."""

import json
import struct
import sys

import pytest

from pyalign import AlignModel
from pyalign.errors import ConfigError
from pyalign.report import (
    REPORT_FILE,
    TensorBoardSink,
    check_report_to,
    report_panels,
    write_training_report,
)
from tests.conftest import REPO_ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUICKSTART_VALIDATION = REPO_ROOT / "examples" / "data" / "quickstart_validation.jsonl"


def png_size(path):
    """Return (width, height) from a PNG's IHDR chunk, checking the signature first."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_sensible_png(path, min_panels):
    width, height = png_size(path)
    # Each panel is 420 x 300 pixels at the report's size and DPI, three to a row.
    assert width >= 420 * min(min_panels, 3)
    assert height >= 300
    assert path.stat().st_size > 10_000


def tiny_config(**trainer):
    return {
        "model_type": "llm",
        "base_model": "pyalign/tiny",
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "trainer": {"learning_rate": 1e-3, "logging_steps": 1, **trainer},
        "input_features": [{"name": "prompt", "type": "text"}],
        "output_features": [{"name": "chosen", "type": "text"}],
    }


def test_dpo_run_writes_report_with_its_curves(tmp_path):
    config = tiny_config(type="dpo", max_steps=3, batch_size=8)
    config["preprocessing"] = {"max_length": 128, "validation_fraction": 0.25}
    stats, _, output_dir = AlignModel(config).train(
        QUICKSTART_VALIDATION, output_directory=tmp_path
    )

    report = output_dir / REPORT_FILE
    assert report.is_file()
    assert (output_dir / "training_statistics.json").is_file()
    assert_sensible_png(report, min_panels=3)
    assert [title for title, _ in report_panels(stats)] == [
        "loss",
        "rewards/accuracies",
        "rewards/margins",
    ]


def test_grpo_run_writes_report_with_reward_and_length(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Count to {n}:"}) + "\n" for n in range(8)), encoding="utf-8"
    )
    config = tiny_config(
        type="grpo",
        max_steps=2,
        batch_size=4,
        num_generations=2,
        max_completion_length=6,
        reward_functions=[{"name": "length", "target": 4}],
    )
    del config["output_features"]  # GRPO generates its responses.
    config["preprocessing"] = {"validation_fraction": 0.25}
    stats, _, output_dir = AlignModel(config).train(prompts, output_directory=tmp_path)

    report = output_dir / REPORT_FILE
    assert_sensible_png(report, min_panels=3)
    titles = [title for title, _ in report_panels(stats)]
    assert "reward" in titles
    assert "completion length" in titles
    assert "loss" in titles


def test_report_panels_follow_logged_metrics():
    statistics = {
        "train": [{"step": 1, "loss": 0.1, "reward": 0.5, "completions/mean_length": 12.0}],
        "eval": [{"step": 1, "eval/reward": 0.4}],
    }
    assert report_panels(statistics) == [
        ("loss", "loss"),
        ("reward", "reward"),
        ("completion length", "completions/mean_length"),
    ]


def test_report_without_metrics_is_still_an_image(tmp_path):
    path = write_training_report({"train": [], "eval": []}, tmp_path / REPORT_FILE)
    width, height = png_size(path)
    assert width > 100
    assert height > 100


def test_tensorboard_sink_writes_train_and_eval_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = TensorBoardSink(tmp_path / "tb")
    sink("train", {"step": 1, "epoch": 0, "loss": 0.7, "rewards/accuracies": 0.5})
    sink("train", {"step": 2, "epoch": 0, "loss": 0.6, "rewards/accuracies": 0.75})
    sink("eval", {"step": 2, "eval/loss": 0.65})
    sink.close()

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/rewards/accuracies", "eval/loss"} <= tags
    assert "train/epoch" not in tags
    assert [(event.step, round(event.value, 4)) for event in events.Scalars("train/loss")] == [
        (1, 0.7),
        (2, 0.6),
    ]


def test_training_reports_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_config(type="dpo", max_steps=2, batch_size=8, report_to=["tensorboard"])
    config["preprocessing"] = {"max_length": 128, "validation_fraction": 0.25}
    stats, _, output_dir = AlignModel(config).train(
        QUICKSTART_VALIDATION, output_directory=tmp_path
    )

    events = EventAccumulator(str(output_dir / "tensorboard"))
    events.Reload()
    logged = {event.step: event.value for event in events.Scalars("train/loss")}
    assert logged == pytest.approx({record["step"]: record["loss"] for record in stats["train"]})
    evaluated = {event.step: event.value for event in events.Scalars("eval/loss")}
    assert evaluated == pytest.approx(
        {record["step"]: record["eval/loss"] for record in stats["eval"]}
    )


def test_report_to_unknown_sink_is_rejected():
    with pytest.raises(ConfigError, match="'trainer.report_to' has invalid value 'wandb'"):
        check_report_to(["wandb"])


def test_report_to_tensorboard_without_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # makes `import tensorboard` fail
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        check_report_to(["tensorboard"])
