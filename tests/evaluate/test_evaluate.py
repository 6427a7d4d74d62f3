"""`pyalign evaluate` and `AlignModel.evaluate` on models trained here."""

import json
import re

import pytest
import torch
from click.testing import CliRunner

from pyalign import AlignModel
from pyalign.cli import main
from pyalign.evaluate import EVALUATION_FILE, _metrics, check_method, evaluate_model_dir
from pyalign.losses import PreferenceLogps, dpo_loss
from pyalign.models import resolve_base_model
from tests.conftest import REPO_ROOT

TRAIN = REPO_ROOT / "examples" / "data" / "quickstart_train.jsonl"
HELD_OUT = REPO_ROOT / "examples" / "data" / "quickstart_validation.jsonl"
STORY_PROMPTS = REPO_ROOT / "examples" / "data" / "story_prompts_validation.jsonl"


def tiny_config(adapter=True, **trainer):
    return {
        "model_type": "llm",
        "base_model": "pyalign/tiny",
        "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0} if adapter else None,
        "trainer": {
            "type": "dpo",
            "max_steps": 8,
            "batch_size": 8,
            "learning_rate": 5e-3,
            **trainer,
        },
        "input_features": [{"name": "prompt", "type": "text"}],
        "output_features": [{"name": "chosen", "type": "text"}],
        "preprocessing": {"max_length": 128},
    }


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A LoRA DPO run on the quickstart data: the AlignModel and its run folder."""
    torch.manual_seed(0)
    model = AlignModel(tiny_config())
    _, _, output_dir = model.train(TRAIN, output_directory=tmp_path_factory.mktemp("runs"))
    return model, output_dir


def table_values(output):
    """Parse the `metric  value` rows of the evaluation table."""
    values = {}
    for line in output.splitlines():
        match = re.fullmatch(r"(\S+)\s+(-?\d+\.\d{4})", line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


def test_table_and_json_carry_same_numbers(trained_run):
    _, output_dir = trained_run
    result = CliRunner().invoke(
        main, ["evaluate", str(output_dir / "model"), "--dataset", str(HELD_OUT)]
    )
    assert result.exit_code == 0, result.output

    saved = json.loads((output_dir / EVALUATION_FILE).read_text())
    shown = table_values(result.output)
    assert set(shown) == set(saved["metrics"])
    for name, value in saved["metrics"].items():
        assert shown[name] == f"{value:.4f}", name
    assert saved["num_examples"] == 64
    assert saved["unit"] == "pairs"
    assert saved["method"] == "dpo"
    assert saved["settings"] == {"beta": 0.1}
    assert f"written to {output_dir / EVALUATION_FILE}" in result.output


def test_trained_accuracy_differs_from_untrained_reference(trained_run, tmp_path):
    _, output_dir = trained_run
    trained, _ = evaluate_model_dir(output_dir, HELD_OUT)

    # The untrained base scored against itself: every implicit reward is exactly 0.
    base = resolve_base_model("pyalign/tiny")
    untrained, json_path = evaluate_model_dir(base, HELD_OUT, reference=base)
    assert json_path is None  # not a run folder and no output path
    assert untrained.metrics["rewards/accuracies"] == 0.0
    assert untrained.metrics["rewards/margins"] == 0.0
    assert trained.metrics["rewards/accuracies"] != untrained.metrics["rewards/accuracies"]
    assert trained.metrics["rewards/accuracies"] > 0.5
    assert trained.metrics["rewards/margins"] > 0.0


def test_api_evaluate_matches_saved_model(trained_run):
    model, output_dir = trained_run
    in_memory = model.evaluate(HELD_OUT)
    loaded = AlignModel.load(output_dir / "model").evaluate(HELD_OUT)
    assert in_memory["metrics"] == pytest.approx(loaded["metrics"], rel=1e-5, abs=1e-6)
    assert in_memory["metrics"]["rewards/accuracies"] == loaded["metrics"]["rewards/accuracies"]


def test_output_option_and_max_samples(trained_run, tmp_path):
    _, output_dir = trained_run
    output = tmp_path / "eval" / "result.json"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(output_dir),
            "--dataset",
            str(HELD_OUT),
            "--max_samples",
            "10",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads(output.read_text())
    assert saved["num_examples"] == 10
    assert saved["num_records"] == 64
    assert "10 pairs scored, 64 records in the file" in result.output


def test_full_weights_reference_is_run_base(tmp_path):
    config = tiny_config(adapter=False, max_steps=2, learning_rate=1e-2)
    _, _, output_dir = AlignModel(config).train(TRAIN, output_directory=tmp_path)
    result, _ = evaluate_model_dir(output_dir, HELD_OUT, max_samples=16)

    assert result.reference == resolve_base_model("pyalign/tiny")
    assert result.metrics["rewards/margins"] != 0.0


def test_metrics_match_dpo_loss():
    generator = torch.Generator().manual_seed(1)
    policy = PreferenceLogps(
        torch.randn(7, generator=generator), torch.randn(7, generator=generator)
    )
    reference = PreferenceLogps(
        torch.randn(7, generator=generator), torch.randn(7, generator=generator)
    )
    loss, expected = dpo_loss(policy, reference, beta=0.3, implementation="torch")

    metrics = _metrics(policy, reference, "dpo", beta=0.3)
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-6)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value.item(), rel=1e-6), name
    # Log-probability accuracy: the share of pairs whose chosen response is the more likely.
    expected_accuracy = (policy.chosen > policy.rejected).float().mean().item()
    assert metrics["logps/accuracies"] == pytest.approx(expected_accuracy)


def test_grpo_model_mean_reward_over_samples(tmp_path):
    config = {
        "model_type": "llm",
        "base_model": "pyalign/tiny",
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "trainer": {
            "type": "grpo",
            "max_steps": 1,
            "batch_size": 4,
            "num_generations": 2,
            "max_completion_length": 6,
            "reward_functions": [{"name": "length", "target": 4}],
        },
        "input_features": [{"name": "prompt", "type": "text"}],
    }
    _, _, output_dir = AlignModel(config).train(STORY_PROMPTS, output_directory=tmp_path)
    result = CliRunner().invoke(
        main, ["evaluate", str(output_dir), "--dataset", str(STORY_PROMPTS), "--max_samples", "4"]
    )
    assert result.exit_code == 0, result.output

    saved = json.loads((output_dir / EVALUATION_FILE).read_text())
    metrics = saved["metrics"]
    assert saved["unit"] == "prompts"
    assert saved["num_examples"] == 4
    for name in ("reward", "rewards/length/mean", "completions/mean_length"):
        assert name in metrics
        assert f"reference/{name}" in metrics
    # One reward function of weight 1: the mean reward is that function's mean.
    assert metrics["reward"] == pytest.approx(metrics["rewards/length/mean"])
    assert 1 <= metrics["completions/mean_length"] <= 6
    assert table_values(result.output)["reward"] == f"{metrics['reward']:.4f}"


def test_unsupported_method_is_named():
    with pytest.raises(NotImplementedError, match="'ppo'"):
        check_method({"trainer": {"type": "ppo"}})


def test_missing_dataset_is_one_line_error(trained_run, tmp_path):
    _, output_dir = trained_run
    result = CliRunner().invoke(
        main, ["evaluate", str(output_dir), "--dataset", str(tmp_path / "absent.csv")]
    )
    assert result.exit_code == 2
    assert "absent.csv" in result.stderr
    assert "not found" in result.stderr


def test_folder_without_model_is_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path), "--dataset", str(HELD_OUT)])
    assert result.exit_code == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "contains no model" in line
    assert "adapter_config.json" in line


def test_full_weights_without_run_config_needs_reference(tmp_path):
    base = resolve_base_model("pyalign/tiny")
    result = CliRunner().invoke(main, ["evaluate", base, "--dataset", str(HELD_OUT)])
    assert result.exit_code == 2
    assert "--reference" in result.stderr
