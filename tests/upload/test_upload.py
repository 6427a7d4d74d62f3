"""Upload to a stand-in hub on 127.0.0.1 and check what it received.

Each upload runs ``pyalign`` in a subprocess whose environment points ``HF_ENDPOINT`` at the
stand-in, sets a fake ``HF_TOKEN`` and an empty ``HF_HOME``, so no request can reach the real
hub and no saved token of the machine is read.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from pyalign.config import load_config
from pyalign.model_card import render_model_card
from tests.conftest import REPO_ROOT
from tests.upload.hub_stand_in import HubStandIn

FAKE_TOKEN = "hf_standInToken0123456789"
RUN_TIMEOUT_S = 120


@pytest.fixture
def hub():
    with HubStandIn(lifetime_s=RUN_TIMEOUT_S + 30) as stand_in:
        yield stand_in


def make_model_folder(folder):
    """Write a small adapter folder like the model/ folder of a pyalign run."""
    folder.mkdir(parents=True)
    save_file(
        {"base_model.model.lora_A.weight": torch.ones(2, 4)}, folder / "adapter_model.safetensors"
    )
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    config = load_config(
        {
            "base_model": "pyalign/tiny",
            "adapter": {"type": "lora"},
            "trainer": {"type": "dpo"},
            "input_features": [{"name": "prompt"}],
            "output_features": [{"name": "chosen"}],
        }
    )
    statistics = {"train": [{"step": 1, "loss": 0.69}], "eval": [], "summary": {}}
    (folder / "README.md").write_text(render_model_card(config, statistics))
    return folder


def run_pyalign(args, hub, token=FAKE_TOKEN, tmp_path=None):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGING_FACE_"))
    }
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(REPO_ROOT),
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=RUN_TIMEOUT_S,
    )


def run_upload(hub, tmp_path, *options, token=FAKE_TOKEN):
    return run_pyalign(
        ["-m", "pyalign.cli", "--logging_level", "debug", "upload", "hf_hub", *options],
        hub,
        token=token,
        tmp_path=tmp_path,
    )


def error_lines(process):
    return [line for line in process.stderr.splitlines() if line.startswith("error:")]


def test_upload_creates_private_repo_and_commits_files(hub, tmp_path):
    folder = make_model_folder(tmp_path / "model")
    process = run_upload(
        hub,
        tmp_path,
        "-r",
        "my-org/tiny-dpo",
        "-m",
        str(folder),
        "--private",
        "--commit_message",
        "First upload",
    )
    assert process.returncode == 0, process.stderr

    assert hub.state.created == [
        {"name": "tiny-dpo", "organization": "my-org", "visibility": "private", "type": "model"}
    ]
    assert len(hub.state.commits) == 1
    commit = hub.state.commits[0]
    assert commit["repo_id"] == "my-org/tiny-dpo"
    assert commit["repo_type"] == "models"
    assert commit["revision"] == "main"
    assert commit["summary"] == "First upload"
    assert commit["other_keys"] == []
    expected = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert commit["files"] == expected
    assert "uploaded" in process.stdout
    assert "my-org/tiny-dpo" in process.stdout


def test_upload_sends_token_but_never_prints_it(hub, tmp_path):
    folder = make_model_folder(tmp_path / "model")
    process = run_upload(hub, tmp_path, "-r", "my-org/tiny-dpo", "-m", str(folder))
    assert process.returncode == 0, process.stderr

    assert hub.state.requests
    for request in hub.state.requests:
        assert request.headers.get("authorization") == f"Bearer {FAKE_TOKEN}", request.path
    assert FAKE_TOKEN not in process.stdout
    assert FAKE_TOKEN not in process.stderr


def test_upload_public_by_default_through_python_api(hub, tmp_path):
    folder = make_model_folder(tmp_path / "model")
    script = (
        "from pyalign import AlignModel\n"
        f"print(AlignModel.upload_to_hf_hub('someone/tiny', {str(folder)!r}))\n"
    )
    process = run_pyalign(["-c", script], hub, tmp_path=tmp_path)
    assert process.returncode == 0, process.stderr

    assert hub.state.created[0]["visibility"] == "public"
    assert hub.state.created[0]["organization"] == "someone"
    assert set(hub.state.commits[0]["files"]) == {path.name for path in folder.iterdir()}
    assert process.stdout.strip().startswith(hub.endpoint)


def test_empty_folder_fails_before_any_request(hub, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    process = run_upload(hub, tmp_path, "-r", "my-org/tiny", "-m", str(folder))

    assert process.returncode == 2
    lines = error_lines(process)
    assert len(lines) == 1, process.stderr
    assert "is empty" in lines[0]
    assert "adapter_model.safetensors" in lines[0]
    assert hub.state.requests == []


def test_weightless_folder_fails_before_any_request(hub, tmp_path):
    folder = make_model_folder(tmp_path / "model")
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_config.json").unlink()
    process = run_upload(hub, tmp_path, "-r", "my-org/tiny", "-m", str(folder))

    assert process.returncode == 2
    lines = error_lines(process)
    assert len(lines) == 1, process.stderr
    assert "no weights" in lines[0]
    assert "model.safetensors" in lines[0]
    assert hub.state.requests == []


@pytest.mark.parametrize(
    "remove, expected",
    [
        ("README.md", "no README.md model card"),
        ("adapter_model.safetensors", "adapter_config.json without its weights"),
    ],
)
def test_incomplete_folder_names_missing_file(hub, tmp_path, remove, expected):
    folder = make_model_folder(tmp_path / "model")
    (folder / remove).unlink()
    process = run_upload(hub, tmp_path, "-r", "my-org/tiny", "-m", str(folder))

    assert process.returncode == 2
    assert expected in process.stderr
    assert hub.state.requests == []


def test_stray_checkpoints_fail_before_any_request(hub, tmp_path):
    folder = make_model_folder(tmp_path / "model")
    (folder / "checkpoint-10").mkdir()
    (folder / "optimizer.pt").write_bytes(b"state")
    process = run_upload(hub, tmp_path, "-r", "my-org/tiny", "-m", str(folder))

    assert process.returncode == 2
    lines = error_lines(process)
    assert len(lines) == 1, process.stderr
    assert "checkpoint-10/" in lines[0]
    assert "optimizer.pt" in lines[0]
    assert hub.state.requests == []


def test_missing_token_fails_before_any_request(hub, tmp_path):
    folder = make_model_folder(tmp_path / "model")
    process = run_upload(hub, tmp_path, "-r", "my-org/tiny", "-m", str(folder), token=None)

    assert process.returncode == 2
    assert "no Hugging Face token found" in process.stderr
    assert "HF_TOKEN" in process.stderr
    assert hub.state.requests == []


def test_hub_rejection_is_one_line_error(hub, tmp_path):
    hub.state.forbidden_namespaces.add("other-org")
    folder = make_model_folder(tmp_path / "model")
    process = run_upload(hub, tmp_path, "-r", "other-org/tiny", "-m", str(folder))

    assert process.returncode == 2
    lines = error_lines(process)
    assert len(lines) == 1, process.stderr
    assert "other-org/tiny" in lines[0]
    assert "403" in lines[0]
    assert "Traceback" not in process.stderr
    assert hub.state.commits == []


def test_invalid_repo_id_is_rejected(hub, tmp_path):
    folder = make_model_folder(tmp_path / "model")
    process = run_upload(hub, tmp_path, "-r", "a/b/c", "-m", str(folder))

    assert process.returncode == 2
    assert len(error_lines(process)) == 1, process.stderr
    assert hub.state.requests == []
