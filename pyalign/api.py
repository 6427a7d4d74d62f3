"""The Python API: ``AlignModel(config).train(dataset=...)``."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from pyalign import _core, ops
from pyalign.config import dump_config, load_config
from pyalign.data import (
    PreferenceColumns,
    PreferenceData,
    read_preference_records,
    split_records,
    tokenize_pairs,
)
from pyalign.errors import ConfigError
from pyalign.models import (
    apply_adapter,
    load_model,
    resolve_base_model,
    tokenizer_file,
)
from pyalign.trainer import DPOTrainer, seed_everything

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


class AlignModel:
    """A model to align with one config, as the command line runs it.

    ``config`` is a mapping or the path of a YAML file; ``overrides`` are ``KEY=VALUE`` strings
    such as ``"trainer.max_steps=20"`` applied on top of it.
    """

    def __init__(self, config: str | Path | Mapping[str, Any], overrides: tuple[str, ...] = ()):
        self.config = load_config(config, overrides)
        self.model = None

    def train(
        self,
        dataset: str | Path | None = None,
        validation_set: str | Path | None = None,
        output_directory: str | Path = "results",
        experiment_name: str = "experiment",
    ) -> tuple[dict[str, Any], dict[str, PreferenceData], Path]:
        """Train on ``dataset`` and save the model.

        Returns ``(train_stats, preprocessed_data, output_dir)``: the logged metrics, the
        tokenized ``train`` (and ``validation``) data, and the run folder that holds ``model/``.
        """
        config = self.config
        trainer_config = config["trainer"]
        dataset = dataset if dataset is not None else config["dataset"]
        validation_set = validation_set if validation_set is not None else config["validation_set"]
        if dataset is None:
            raise ConfigError("no dataset given: pass --dataset PATH or set 'dataset' in the config")
        seed_everything(trainer_config["seed"])

        # Validate everything cheap before loading the model.
        model_path = resolve_base_model(config["base_model"])
        kernels = ops.load_backend(config["backend"]["kernels"])
        tokenizer_path = tokenizer_file(model_path)
        tokenizer = _core.Tokenizer(str(tokenizer_path))
        logger.info("data backend: pyalign._core %s (Rust), tokenizer %s", _core.__version__, tokenizer_path)
        logger.info("op backend: %s", kernels)

        preprocessed = self._prepare_data(dataset, validation_set, tokenizer)

        model = load_model(model_path)
        model = apply_adapter(model, config["adapter"])
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        self.model = model

        trainer = DPOTrainer(
            config,
            model,
            preprocessed["train"],
            preprocessed.get("validation"),
            device,
        )
        statistics = trainer.train().to_dict()
        statistics["summary"].update(
            data_backend=f"pyalign._core {_core.__version__}",
            op_backend=str(kernels),
            dropped_pairs={name: data.drop_reasons for name, data in preprocessed.items()},
        )

        output_dir = next_run_directory(Path(output_directory), experiment_name)
        self.save(output_dir, model_path, statistics)
        logger.info("saved the model to %s", output_dir / "model")
        return statistics, preprocessed, output_dir

    def _prepare_data(self, dataset, validation_set, tokenizer) -> dict[str, PreferenceData]:
        config = self.config
        columns = PreferenceColumns.from_config(config)
        preprocessing = config["preprocessing"]
        table = read_preference_records(dataset, columns)
        tables = {"train": (table, str(dataset))}
        if validation_set is not None:
            tables["validation"] = (read_preference_records(validation_set, columns), str(validation_set))
        elif preprocessing["validation_fraction"] > 0:
            train, held_out = split_records(
                table, preprocessing["validation_fraction"], config["trainer"]["seed"]
            )
            tables["train"] = (train, f"{dataset} (train split)")
            tables["validation"] = (held_out, f"{dataset} (validation split)")

        preprocessed = {}
        for name, (part, source) in tables.items():
            preprocessed[name] = tokenize_pairs(part, columns, tokenizer, preprocessing, source)
            logger.info("%s: %d pairs from %s", name, len(preprocessed[name]), source)
        return preprocessed

    def save(self, output_dir: Path, model_path: str, statistics: dict[str, Any]) -> None:
        """Write ``model/`` (weights or adapter, plus tokenizer), the config and the metrics."""
        model_dir = output_dir / "model"
        model_dir.mkdir(parents=True)
        self.model.save_pretrained(model_dir)
        tokenizer_source = Path(model_path)
        if tokenizer_source.is_dir():
            for name in TOKENIZER_FILES:
                if (tokenizer_source / name).is_file():
                    shutil.copy2(tokenizer_source / name, model_dir / name)
        else:
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(model_path).save_pretrained(model_dir)
        (output_dir / "config.yaml").write_text(dump_config(self.config), encoding="utf-8")
        (output_dir / "training_statistics.json").write_text(
            json.dumps(statistics, indent=2), encoding="utf-8"
        )


def next_run_directory(output_directory: Path, experiment_name: str) -> Path:
    """Return ``<dir>/<name>_run``, or ``_run_1``, ``_run_2``... if taken: runs never overwrite."""
    candidate = output_directory / f"{experiment_name}_run"
    suffix = 0
    while candidate.exists():
        suffix += 1
        candidate = output_directory / f"{experiment_name}_run_{suffix}"
    candidate.mkdir(parents=True)
    return candidate
