"""`pyalign prepare hh-rlhf`: local files and folders, hub dataset ids, summaries and errors."""

import csv
import gzip
import json
import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from pyalign import _core
from pyalign.cli import main
from pyalign.prepare import prepare_hh_rlhf
from tests.conftest import REPO_ROOT, require_shared
from tests.upload.hub_stand_in import HubStandIn

HH_RLHF_TEST_SPLIT = "data/hh-rlhf/harmless-base-test.jsonl.gz"


def conversation(*turns):
    """Join (speaker, text) turns in HH-RLHF's form: each turn after a blank line."""
    return "".join(f"\n\n{speaker}: {text}" for speaker, text in turns)


def record(prompt, chosen, rejected):
    return {
        "chosen": conversation(("Human", prompt), ("Assistant", chosen)),
        "rejected": conversation(("Human", prompt), ("Assistant", rejected)),
    }


def write_jsonl(path, records, compress=False):
    text = "".join(json.dumps(item) + "\n" for item in records)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as file:
            file.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def read_csv(path):
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def run_prepare(*args):
    return CliRunner().invoke(main, ["prepare", "hh-rlhf", *map(str, args)])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_shared_split_both_formats(tmp_path):
    source = require_shared(HH_RLHF_TEST_SPLIT)
    result = run_prepare(
        "--input", source, "--output_dir", tmp_path, "--max_train_samples", 1000, "--format", "both"
    )
    assert result.exit_code == 0, result.output

    dpo_rows = read_csv(tmp_path / "train.csv")
    kto_rows = read_csv(tmp_path / "train_kto.csv")
    assert len(dpo_rows) == 1000
    assert len(kto_rows) == 2000
    assert list(dpo_rows[0]) == ["prompt", "chosen", "rejected"]
    assert list(kto_rows[0]) == ["prompt", "response", "label"]
    # Each pair becomes a desirable row (chosen) and an undesirable row (rejected), in order.
    assert kto_rows[0] == {
        "prompt": dpo_rows[0]["prompt"],
        "response": dpo_rows[0]["chosen"],
        "label": "true",
    }
    assert kto_rows[1] == {
        "prompt": dpo_rows[0]["prompt"],
        "response": dpo_rows[0]["rejected"],
        "label": "false",
    }
    # A single file is the train split: no test files.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train.csv", "train_kto.csv"]
    assert "wrote 1000 rows" in result.output
    assert "wrote 2000 rows" in result.output


def test_summary_counts_reads_and_skips_of_shared_split(tmp_path):
    source = require_shared(HH_RLHF_TEST_SPLIT)
    summary = prepare_hh_rlhf(tmp_path, input=source)

    (converted,) = summary.files
    assert converted.read == 2312
    assert converted.kept + converted.skipped == converted.read
    assert converted.written == converted.kept
    assert sum(converted.skip_reasons.values()) == converted.skipped
    assert f"skipped {converted.skipped}" in converted.describe()
    for reason, count in converted.skip_reasons.items():
        assert f"{reason}: {count}" in converted.describe()


def test_prepared_file_trains_with_example_config(tmp_path):
    source = require_shared(HH_RLHF_TEST_SPLIT)
    model_dir = require_shared("models/stories260K")
    data_dir = tmp_path / "data"
    result = run_prepare("--input", source, "--output_dir", data_dir, "--max_train_samples", 1000)
    assert result.exit_code == 0, result.output

    config = yaml.safe_load((REPO_ROOT / "examples" / "hh_rlhf_dpo.yaml").read_text())
    config["base_model"] = str(model_dir)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(config_path),
            "--dataset",
            str(data_dir / "train.csv"),
            "--output_directory",
            str(tmp_path / "results"),
            "--set",
            "trainer.max_steps=2",
            "--set",
            "trainer.gradient_accumulation_steps=1",
            "--set",
            "preprocessing.max_length=128",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        tmp_path / "results" / "experiment_run" / "model" / "adapter_model.safetensors"
    ).is_file()


def test_folder_gives_train_and_test(tmp_path):
    source = tmp_path / "harmless-base"
    source.mkdir()
    write_jsonl(
        source / "train.jsonl.gz", [record(f"Q{i}?", "Yes.", "No.") for i in range(5)], True
    )
    write_jsonl(source / "test.jsonl", [record("Why?", "Because.", "Go away.")])
    output = tmp_path / "out"

    summary = prepare_hh_rlhf(output, input=source, format="both", max_test_samples=1)

    names = [(file.split, file.format, file.output.name) for file in summary.files]
    assert names == [
        ("train", "dpo", "train.csv"),
        ("train", "kto", "train_kto.csv"),
        ("test", "dpo", "test.csv"),
        ("test", "kto", "test_kto.csv"),
    ]
    assert len(read_csv(output / "train.csv")) == 5
    assert read_csv(output / "test.csv") == [
        {"prompt": "Why?", "chosen": "Because.", "rejected": "Go away."}
    ]
    assert len(read_csv(output / "test_kto.csv")) == 2


def test_kto_format_writes_only_kto_file(tmp_path):
    source = write_jsonl(tmp_path / "pairs.jsonl", [record("Hi?", "Hello.", "Bye.")])
    summary = prepare_hh_rlhf(tmp_path / "out", input=source, format="kto")
    assert [file.output.name for file in summary.files] == ["train_kto.csv"]
    assert not (tmp_path / "out" / "train.csv").exists()


def test_existing_output_replaced_with_warning(tmp_path, caplog):
    source = write_jsonl(tmp_path / "pairs.jsonl", [record("Hi?", "Hello.", "Bye.")])
    prepare_hh_rlhf(tmp_path / "out", input=source, format="dpo")

    with caplog.at_level("WARNING", logger="pyalign.prepare"):
        prepare_hh_rlhf(tmp_path / "out", input=source, format="dpo")

    assert f"replacing the existing {tmp_path / 'out' / 'train.csv'}" in caplog.text


def test_skipped_records_are_counted_with_reason(tmp_path):
    records = [
        record("Hi?", "Hello.", "Bye."),
        record("Empty?", "", "Something."),
        record("Also empty?", "", "Other."),
        record("Rejected empty?", "Fine.", ""),
    ]
    source = write_jsonl(tmp_path / "pairs.jsonl", records)
    result = run_prepare("--input", source, "--output_dir", tmp_path / "out")

    assert result.exit_code == 0, result.output
    assert "read 4 records, kept 1, wrote 1 rows, skipped 3" in result.output
    assert "empty_chosen_response: 2" in result.output
    assert "empty_rejected_response: 1" in result.output


def test_dataset_id_is_read_with_datasets_library(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")

    calls = []

    def fake_load_dataset(name, data_dir=None):
        calls.append((name, data_dir))
        train = [record("One?", "1.", "2."), record("Two?", "2.", "3.")]
        test = [record("Three?", "3.", "4.")]
        return datasets.DatasetDict(
            train=datasets.Dataset.from_list(train), test=datasets.Dataset.from_list(test)
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    summary = prepare_hh_rlhf(tmp_path, data_dir="harmless-base")

    assert calls == [("Anthropic/hh-rlhf", "harmless-base")]
    assert [(file.split, file.kept) for file in summary.files] == [("train", 2), ("test", 1)]
    assert read_csv(tmp_path / "test.csv")[0]["prompt"] == "Three?"
    assert "Anthropic/hh-rlhf (harmless-base) split 'train'" == summary.files[0].source


def test_dataset_without_conversation_columns_names_them(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")

    def fake_load_dataset(name, data_dir=None):
        return datasets.DatasetDict(train=datasets.Dataset.from_list([{"text": "hello"}]))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(KeyError, match="no column 'chosen', 'rejected'; columns found: text"):
        prepare_hh_rlhf(tmp_path, input="someone/other-data")


def test_offline_dataset_id_suggests_local_file(tmp_path):
    # A fresh interpreter reads the offline settings at import; the stand-in hub records any
    # request that would otherwise leave the machine.
    with HubStandIn(lifetime_s=150) as hub:
        env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
        env.update(
            HF_ENDPOINT=hub.endpoint,
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            HF_HOME=str(tmp_path / "hf_home"),
            PYTHONPATH=str(REPO_ROOT),
        )
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "pyalign.cli",
                "prepare",
                "hh-rlhf",
                "--output_dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        requests = list(hub.state.requests)

    assert process.returncode == 2, process.stderr
    last_line = process.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: could not load the dataset Anthropic/hh-rlhf")
    assert "--input" in last_line
    assert "Traceback" not in process.stderr
    assert requests == []


def test_full_context_prompt(tmp_path):
    earlier = conversation(("Human", "Hi"), ("Assistant", "Hello!"))
    item = {
        "chosen": earlier + conversation(("Human", "What is 2+2?"), ("Assistant", "4.")),
        "rejected": earlier + conversation(("Human", "What is 2+2?"), ("Assistant", "5.")),
    }
    source = write_jsonl(tmp_path / "pairs.jsonl", [item])
    result = run_prepare(
        "--input", source, "--output_dir", tmp_path / "out", "--prompt", "full-context"
    )

    import inspect

    if "prompt" not in inspect.signature(_core.convert_hh_rlhf).parameters:
        assert_one_line_error(result, "full-context", "last-turn")
        return
    assert result.exit_code == 0, result.output
    (row,) = read_csv(tmp_path / "out" / "train.csv")
    assert "Hello!" in row["prompt"]
    assert "What is 2+2?" in row["prompt"]
    assert row["chosen"] == "4."


@pytest.mark.parametrize(
    "make_input, fragments",
    [
        (lambda tmp: tmp / "absent.jsonl", ["HH-RLHF input not found", "absent.jsonl"]),
        (lambda tmp: _write(tmp / "pairs.txt", "x"), ["unsupported extension", ".jsonl.gz"]),
        (lambda tmp: _make_dir(tmp / "empty"), ["contains no train.jsonl.gz", "empty"]),
        (
            lambda tmp: _write(
                tmp / "pairs.jsonl", json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b"})
            ),
            ["pairs.jsonl", "rejected"],
        ),
        (
            lambda tmp: _write(tmp / "pairs.jsonl", json.dumps(record("Q?", "", "No."))),
            ["pairs.jsonl", "no HH-RLHF record could be converted", "empty_chosen_response"],
        ),
    ],
    ids=["missing-file", "wrong-extension", "folder-without-train", "missing-key", "nothing-kept"],
)
def test_bad_input_is_one_line_error(tmp_path, make_input, fragments):
    result = run_prepare("--input", make_input(tmp_path), "--output_dir", tmp_path / "out")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out" / "train.csv").exists()


def _write(path, text):
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _make_dir(path):
    path.mkdir()
    return path
