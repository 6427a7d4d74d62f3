"""Small configs and datasets that the trainer tests share."""

import json
from pathlib import Path

import torch

from pyalign import _core
from pyalign.config import load_config
from pyalign.data import prepare_datasets
from pyalign.models import apply_adapter, load_model, resolve_base_model, tokenizer_file
from tests.conftest import REPO_ROOT, shared_dir

QUICKSTART_TRAIN = REPO_ROOT / "examples" / "data" / "quickstart_train.jsonl"
QUICKSTART_VALIDATION = REPO_ROOT / "examples" / "data" / "quickstart_validation.jsonl"
STORY_PROMPTS = REPO_ROOT / "examples" / "data" / "story_prompts_train.jsonl"


def tiny_base_model() -> str:
    """Return stories260K when the test assets are present, else the built-in preset."""
    shared = shared_dir() / "models" / "stories260K"
    return str(shared) if (shared / "config.json").is_file() else "pyalign/tiny"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def kto_rows(count: int | None = None) -> list[dict]:
    """Expand quickstart pairs into KTO rows: the chosen answer desirable, the rejected not."""
    rows = []
    for pair in read_jsonl(QUICKSTART_VALIDATION)[:count]:
        rows.append({"prompt": pair["prompt"], "response": pair["chosen"], "label": True})
        rows.append({"prompt": pair["prompt"], "response": pair["rejected"], "label": False})
    return rows


def config_for(trainer_type: str, base_model: str = "pyalign/tiny", **trainer) -> dict:
    """Return a small LoRA config of ``trainer_type`` with the trainer keys given."""
    config = {
        "base_model": base_model,
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "trainer": {
            "type": trainer_type,
            "max_steps": 2,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            **trainer,
        },
        "input_features": [{"name": "prompt", "type": "text"}],
    }
    if trainer_type in ("dpo", "orpo"):
        config["output_features"] = [{"name": "chosen", "type": "text"}]
        config["preprocessing"] = {"max_length": 128}
    elif trainer_type == "kto":
        config["output_features"] = [{"name": "response", "type": "text"}]
        config["preprocessing"] = {"max_length": 128}
    return config


def build(config: dict, dataset: Path, validation_set: Path | None = None):
    """Return the resolved config, the model and the prepared data, as AlignModel builds them."""
    config = load_config(config)
    model_path = resolve_base_model(config["base_model"])
    tokenizer = _core.Tokenizer(str(tokenizer_file(model_path)))
    data = prepare_datasets(config, dataset, validation_set, tokenizer)
    model = apply_adapter(load_model(model_path), config["adapter"])
    return config, model, data, torch.device("cpu")
