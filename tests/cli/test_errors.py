"""Bad input on the command line: a one-line error that names the problem, exit code 2."""

import json
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from pyalign.cli import main

PAIR = {"prompt": "Hi?", "chosen": "Hello there.", "rejected": "Go away."}


def write_config(folder, **changes):
    config = {
        "model_type": "llm",
        "base_model": "pyalign/tiny",
        "trainer": {"type": "dpo", "max_steps": 1},
        "input_features": [{"name": "prompt", "type": "text"}],
        "output_features": [{"name": "chosen", "type": "text"}],
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run_train(*args):
    result = CliRunner().invoke(main, ["train", *map(str, args)])
    return result


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_rejected_column(tmp_path):
    dataset = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "Hi?", "chosen": "Hello."}])
    result = run_train(write_config(tmp_path), "--dataset", dataset)
    assert_one_line_error(result, "rejected", "data.jsonl")


def test_empty_file(tmp_path):
    dataset = tmp_path / "data.csv"
    dataset.write_text("")
    result = run_train(write_config(tmp_path), "--dataset", dataset)
    assert_one_line_error(result, "data.csv", "empty")


def test_empty_chosen(tmp_path):
    rows = [PAIR, {"prompt": "Hi?", "chosen": "  ", "rejected": "No."}]
    dataset = write_jsonl(tmp_path / "data.jsonl", rows)
    result = run_train(write_config(tmp_path), "--dataset", dataset)
    assert_one_line_error(result, "record 2", "'chosen' is empty")


def test_file_not_utf8(tmp_path):
    dataset = tmp_path / "data.csv"
    dataset.write_bytes(b"prompt,chosen,rejected\nHi,caf\xe9,no\n")
    result = run_train(write_config(tmp_path), "--dataset", dataset)
    assert_one_line_error(result, "data.csv", "UTF-8")


def test_unknown_config_key(tmp_path):
    dataset = write_jsonl(tmp_path / "data.jsonl", [PAIR])
    config = write_config(tmp_path, trainer={"learnig_rate": 0.1})
    result = run_train(config, "--dataset", dataset)
    assert_one_line_error(result, "trainer.learnig_rate", "trainer.learning_rate")


def test_unknown_trainer_type(tmp_path):
    dataset = write_jsonl(tmp_path / "data.jsonl", [PAIR])
    config = write_config(tmp_path, trainer={"type": "ppo"})
    result = run_train(config, "--dataset", dataset)
    assert_one_line_error(result, "trainer.type", "'ppo'")


def test_base_model_path_missing(tmp_path):
    dataset = write_jsonl(tmp_path / "data.jsonl", [PAIR])
    config = write_config(tmp_path, base_model="./no/such/model")
    result = run_train(config, "--dataset", dataset)
    assert_one_line_error(result, "base_model path './no/such/model' does not exist")


def test_missing_dataset_file(tmp_path):
    result = run_train(write_config(tmp_path), "--dataset", tmp_path / "absent.csv")
    assert_one_line_error(result, "dataset not found", "absent.csv")


def test_missing_validation_file(tmp_path):
    dataset = write_jsonl(tmp_path / "data.jsonl", [PAIR])
    result = run_train(
        write_config(tmp_path), "--dataset", dataset, "--validation_set", tmp_path / "absent.csv"
    )
    assert_one_line_error(result, "validation set not found", "absent.csv")


def test_error_in_subprocess_has_no_traceback(tmp_path):
    config = write_config(tmp_path, trainer={"type": "ppo"})
    process = subprocess.run(
        [sys.executable, "-m", "pyalign.cli", "train", str(config), "--dataset", "x.csv"],
        capture_output=True,
        text=True,
    )
    assert process.returncode == 2
    assert process.stderr.strip().splitlines()[-1].startswith("error: config key 'trainer.type'")
    assert "Traceback" not in process.stderr


def test_debug_flag_shows_traceback(tmp_path):
    config = write_config(tmp_path, trainer={"type": "ppo"})
    result = CliRunner().invoke(main, ["--debug", "train", str(config), "--dataset", "x.csv"])
    assert result.exit_code != 0
    assert result.exception is not None


@pytest.mark.parametrize("args", [[], ["a.yaml", "--config", "b.yaml"]])
def test_config_argument_usage_errors(args):
    result = CliRunner().invoke(main, ["train", *args])
    assert result.exit_code == 2
    assert "config" in result.output
