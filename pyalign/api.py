"""The Python API: ``AlignModel(config).train(dataset=...)``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from pyalign import _core, ops
from pyalign.config import dump_config, load_config
from pyalign.data import TrainingData, prepare_datasets
from pyalign.errors import ConfigError
from pyalign.models import (
    apply_adapter,
    load_model,
    resolve_base_model,
    tokenizer_file,
)
from pyalign.report import check_report_to, close_metric_sinks, metric_sinks
from pyalign.trainers import build_trainer, seed_everything

logger = logging.getLogger(__name__)


class AlignModel:
    """A model to align with one config, as the command line runs it.

    ``config`` is a mapping or the path of a YAML file; ``overrides`` are ``KEY=VALUE`` strings
    such as ``"trainer.max_steps=20"`` applied on top of it.
    """

    def __init__(self, config: str | Path | Mapping[str, Any], overrides: tuple[str, ...] = ()):
        self.config = load_config(config, overrides)
        self.model = None
        # A transformers tokenizer, set when training changes the base model's tokenizer (added
        # tokens, a chat template) so that save() writes it; None copies the base tokenizer.
        self.tokenizer = None

    def train(
        self,
        dataset: str | Path | None = None,
        validation_set: str | Path | None = None,
        output_directory: str | Path = "results",
        experiment_name: str = "experiment",
    ) -> tuple[dict[str, Any], dict[str, TrainingData], Path]:
        """Train on ``dataset`` and save the model.

        Returns ``(train_stats, preprocessed_data, output_dir)``: the logged metrics, the
        tokenized ``train`` (and ``validation``) data, and the run folder that holds ``model/``.
        """
        config = self.config
        trainer_config = config["trainer"]
        dataset = dataset if dataset is not None else config["dataset"]
        validation_set = validation_set if validation_set is not None else config["validation_set"]
        if dataset is None:
            raise ConfigError(
                "no dataset given: pass --dataset PATH or set 'dataset' in the config"
            )
        seed_everything(trainer_config["seed"])

        # Validate everything cheap before loading the model. The data comes before the ops,
        # whose first build takes a while, so that a data error is reported at once.
        report_to = check_report_to(trainer_config["report_to"])
        model_path = resolve_base_model(config["base_model"])
        tokenizer_path = tokenizer_file(model_path)
        tokenizer = _core.Tokenizer(str(tokenizer_path))
        logger.info(
            "data backend: pyalign._core %s (Rust), tokenizer %s", _core.__version__, tokenizer_path
        )
        preprocessed = self._prepare_data(dataset, validation_set, tokenizer)
        kernels = ops.load_backend(config["backend"]["kernels"])
        logger.info("op backend: %s", kernels)

        model = load_model(model_path)
        model = apply_adapter(model, config["adapter"])
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        self.model = model

        # The run folder exists from here on, so that metric sinks can write into it.
        output_dir = next_run_directory(Path(output_directory), experiment_name)
        sinks = metric_sinks(report_to, output_dir)
        trainer = build_trainer(
            config,
            model,
            preprocessed["train"],
            preprocessed.get("validation"),
            device,
            metric_sinks=sinks,
        )
        try:
            statistics = trainer.train().to_dict()
        finally:
            close_metric_sinks(sinks)
        statistics["summary"].update(
            data_backend=f"pyalign._core {_core.__version__}",
            op_backend=str(kernels),
            dropped_pairs={name: data.drop_reasons for name, data in preprocessed.items()},
            dataset=str(dataset),
            validation_set=None if validation_set is None else str(validation_set),
        )

        self.save(output_dir, model_path, statistics)
        logger.info("saved the model to %s", output_dir / "model")
        return statistics, preprocessed, output_dir

    def _prepare_data(self, dataset, validation_set, tokenizer) -> dict[str, TrainingData]:
        return prepare_datasets(self.config, dataset, validation_set, tokenizer)

    def save(self, output_dir: Path, model_path: str, statistics: dict[str, Any]) -> None:
        """Write the run folder: ``model/`` (weights or adapter, tokenizer, ``README.md`` model
        card), ``config.yaml``, ``training_statistics.json`` and ``training_report.png``."""
        from pyalign.export import save_model_weights, save_tokenizer
        from pyalign.model_card import write_model_card
        from pyalign.report import REPORT_FILE, write_training_report

        model_dir = output_dir / "model"
        model_dir.mkdir(parents=True)
        save_model_weights(self.model, model_dir, model_path)
        save_tokenizer(model_dir, model_path, self.tokenizer)
        (output_dir / "config.yaml").write_text(dump_config(self.config), encoding="utf-8")
        (output_dir / "training_statistics.json").write_text(
            json.dumps(statistics, indent=2), encoding="utf-8"
        )
        write_model_card(model_dir, self.config, statistics)
        method = self.config["trainer"]["type"].upper()
        write_training_report(
            statistics, output_dir / REPORT_FILE, title=f"{method}: {output_dir.name}"
        )

    @classmethod
    def load(cls, model_dir: str | Path) -> "AlignModel":
        """Load a trained model folder (or its run folder) for ``evaluate`` and ``generate``.

        An adapter is attached to its base model, whose embeddings are first resized when
        training added tokens. ``config`` is the run's ``config.yaml`` when the folder sits in
        a run folder, else None.
        """
        from transformers import AutoTokenizer

        from pyalign.export import load_trained_model, read_run_config, resolve_model_dir

        model_dir = resolve_model_dir(model_dir)
        instance = cls.__new__(cls)
        instance.config = read_run_config(model_dir)
        instance.model = load_trained_model(model_dir)
        instance.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        instance.model_dir = model_dir
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        instance.model.to(device)
        instance.model.eval()
        return instance

    def evaluate(
        self,
        dataset: str | Path,
        reference: str | None = None,
        batch_size: int | None = None,
        max_samples: int | None = None,
    ) -> dict[str, Any]:
        """Score held-out pairs (GRPO: prompts) with the model and its reference.

        The reference is ``reference`` (a model folder or hub id) when given. Otherwise a LoRA
        model is scored against itself with the adapter disabled, and full weights against the
        config's ``base_model``. Returns the result as a dict. Its ``metrics`` contain
        ``rewards/accuracies``, ``rewards/margins``, ``logps/chosen``, ``logps/rejected`` and
        more, or for GRPO ``reward`` and ``reference/reward``. See ``pyalign.evaluate``.
        """
        from pyalign.evaluate import (
            DEFAULT_CONFIG,
            check_method,
            choose_reference,
            evaluate_completions,
            evaluate_preferences,
        )

        if self.model is None:
            raise ValueError("no model to evaluate: train() or AlignModel.load() one first")
        config = self.config if self.config is not None else load_config(DEFAULT_CONFIG)
        check_method(config)
        base_model = self.config["base_model"] if self.config is not None else None
        reference_model, reference_name = choose_reference(self.model, reference, base_model)
        evaluate = (
            evaluate_completions if config["trainer"]["type"] == "grpo" else evaluate_preferences
        )
        result = evaluate(
            self.model,
            reference_model,
            self._data_tokenizer(),
            config,
            dataset,
            batch_size=batch_size,
            max_samples=max_samples,
            reference_name=reference_name,
        )
        return result.to_dict()

    def _data_tokenizer(self) -> "_core.Tokenizer":
        model_dir = getattr(self, "model_dir", None)
        if model_dir is not None and (model_dir / "tokenizer.json").is_file():
            return _core.Tokenizer(str(model_dir / "tokenizer.json"))
        if self.tokenizer is not None:
            raise NotImplementedError(
                "evaluate() after training with a changed tokenizer needs the saved model: "
                "load it with AlignModel.load(MODEL_DIR) first"
            )
        return _core.Tokenizer(str(tokenizer_file(resolve_base_model(self.config["base_model"]))))

    def generate(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> list[str]:
        """Complete each prompt with the model and return the completions, prompts removed.

        Greedy by default; ``do_sample=True`` samples with ``temperature`` and ``top_p``. The
        prompts are encoded as in training (with the tokenizer's BOS), padded on the left.
        """
        if self.model is None:
            raise ValueError("no model to generate with: train() or AlignModel.load() one first")
        if isinstance(prompts, str):
            prompts = [prompts]
        tokenizer = self._generation_tokenizer()
        device = next(self.model.parameters()).device
        inputs = tokenizer(list(prompts), return_tensors="pt", padding=True).to(device)
        sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                output_ids = self.model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )  # (B, T + new tokens)
        finally:
            self.model.train(was_training)
        completions = output_ids[:, inputs["input_ids"].shape[1] :]
        return tokenizer.batch_decode(completions, skip_special_tokens=True)

    def _generation_tokenizer(self):
        import copy

        from transformers import AutoTokenizer

        cached = getattr(self, "_padded_tokenizer", None)
        if cached is not None:
            return cached
        if self.tokenizer is not None:
            # A copy, so that the padding set here never reaches a tokenizer that save() writes.
            tokenizer = copy.deepcopy(self.tokenizer)
        else:
            tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(self.config["base_model"]))
        if tokenizer.pad_token_id is None:
            # The attention mask hides left padding, so any id serves; EOS is the usual choice.
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self._padded_tokenizer = tokenizer
        return tokenizer

    @staticmethod
    def upload_to_hf_hub(
        repo_id: str,
        model_path: str | Path,
        repo_type: str = "model",
        private: bool = False,
        commit_message: str | None = None,
        commit_description: str | None = None,
    ) -> str:
        """Upload a trained model folder to the Hugging Face hub; see ``pyalign.upload``.

        The folder is checked before any request. Returns the URL of the commit.
        """
        from pyalign.upload import upload_to_hf_hub

        return upload_to_hf_hub(
            repo_id,
            model_path,
            repo_type=repo_type,
            private=private,
            commit_message=commit_message,
            commit_description=commit_description,
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
