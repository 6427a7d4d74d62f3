"""Evaluate a trained model against its reference on held-out preference pairs.

For every pair, the policy (the trained model) and the reference (the base model it was trained
from) each score the chosen and rejected responses with the sequence log-probability of the
response tokens, as in training. With ``beta`` from the run config, the implicit DPO rewards
are ``beta * (policy - reference)``, and the metrics are those the trainer logs under ``eval/``:

- ``rewards/accuracies``: the share of pairs whose chosen reward exceeds the rejected one (a tie
  counts as not correct, so the reference scored against itself gets 0);
- ``rewards/margins``, ``rewards/chosen``, ``rewards/rejected``: means over the pairs;
- ``logps/chosen``, ``logps/rejected``: the policy's mean log-probabilities;
- ``loss``: the DPO sigmoid loss, for DPO runs.

Two more show how each model ranks the pair on its own. ``logps/accuracies`` and
``reference/logps/accuracies`` are the shares of pairs to which the policy, or the reference,
gives the chosen response the higher log-probability. ``reference/logps/chosen`` and
``reference/logps/rejected`` are the reference's means.

A GRPO model is scored on held-out prompts instead: each model samples ``num_generations``
completions per prompt with the run's sampling settings and seed, the run's reward functions
score them, and the metrics are the mean ``reward`` (the weighted sum of the functions),
``rewards/<function>/mean``, ``completions/mean_length`` and ``completions/clipped_ratio``, each
also under ``reference/`` for the reference's own completions.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from pyalign import _core, ops
from pyalign.config import load_config
from pyalign.data import PreferenceColumns, read_preference_records, tokenize_pairs
from pyalign.errors import ConfigError
from pyalign.export import (
    base_model_of,
    is_adapter_folder,
    load_trained_model,
    read_run_config,
    resolve_model_dir,
    run_folder,
)
from pyalign.losses import PreferenceLogps
from pyalign.models import ReferenceModel, decoder_and_head, load_model, resolve_base_model
from pyalign.models import tokenizer_file as base_tokenizer_file

logger = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation_statistics.json"
DEFAULT_BATCH_SIZE = 8
# Metrics in the order the table shows them.
METRIC_ORDER = (
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "logps/accuracies",
    "reference/logps/chosen",
    "reference/logps/rejected",
    "reference/logps/accuracies",
)
# The settings used when a model folder has no run config beside it: the trainer's defaults.
DEFAULT_CONFIG = {
    "base_model": "none",
    "trainer": {"type": "dpo"},
    "input_features": [{"name": "prompt"}],
    "output_features": [{"name": "chosen"}],
}
PREFERENCE_METHODS = ("dpo", "kto", "orpo")
# Methods whose run config names the chosen and rejected columns of a pair.
PAIR_METHODS = ("dpo", "orpo")
# The beta of the implicit rewards when the run config sets none (the trainer's default).
DEFAULT_BETA = 0.1


@dataclass
class EvaluationResult:
    """The metrics of one evaluation and what they were computed on."""

    model: str
    reference: str
    dataset: str
    method: str
    settings: dict[str, Any]  # beta, or GRPO's sampling settings
    num_records: int
    num_examples: int
    unit: str  # "pairs" or "prompts"
    metrics: dict[str, float]
    dropped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format_table(self) -> str:
        """Return the result as a plain-text table, values to 4 decimals."""
        settings = ", ".join(f"{name} {value:g}" for name, value in self.settings.items())
        header = [
            f"model      {self.model}",
            f"reference  {self.reference}",
            f"dataset    {self.dataset}: {self.num_examples} {self.unit} scored, "
            f"{self.num_records} records in the file",
            f"method     {self.method}" + (f", {settings}" if settings else ""),
            "",
        ]
        width = max(len(name) for name in self.metrics)
        lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  {'-' * 10}"]
        for name, value in self.metrics.items():
            lines.append(f"{name.ljust(width)}  {value:.4f}")
        if self.dropped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in self.dropped.items())
            lines.append(f"dropped during tokenization: {reasons}")
        return "\n".join(header + lines)


class FixedReference:
    """A separately loaded reference model, run in eval mode without gradients."""

    def __init__(self, model):
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()

    @contextlib.contextmanager
    def activate(self) -> Iterator[Any]:
        with torch.no_grad():
            yield self.model


def choose_reference(policy, reference: str | None, base_model: str | None):
    """Return ``(reference, description)`` for scoring ``policy``.

    ``reference`` (a model folder or hub id) wins when given. Otherwise a LoRA policy is its own
    reference with the adapter disabled, and a full-weights policy needs ``base_model``.
    """
    from peft import PeftModel

    if reference is not None:
        path = resolve_base_model(reference)
        return FixedReference(load_model(path)), path
    if isinstance(policy, PeftModel):
        return ReferenceModel(policy), "the policy with its adapter disabled"
    if base_model is None:
        raise ConfigError(
            "the model has full weights and no run config.yaml names its base model, so its "
            "reference is unknown; pass the reference model (--reference PATH_OR_ID)"
        )
    path = resolve_base_model(base_model)
    return FixedReference(load_model(path)), path


def evaluate_model_dir(
    model_dir: str | Path,
    dataset: str | Path,
    reference: str | None = None,
    batch_size: int | None = None,
    max_samples: int | None = None,
    output: str | Path | None = None,
) -> tuple[EvaluationResult, Path | None]:
    """Evaluate the model in ``model_dir`` (a model or run folder) on ``dataset``.

    The reference is ``reference`` when given (a model folder or hub id), else the base model
    named in ``adapter_config.json`` or in the run's ``config.yaml``. The JSON result goes to
    ``output``, or by default to ``evaluation_statistics.json`` in the run folder, replacing an
    earlier one. A model folder outside a run folder writes JSON only when ``output`` is given.
    Returns the result and the JSON path (None when none was written).
    """
    model_dir = resolve_model_dir(model_dir)
    run_config = read_run_config(model_dir)
    config = run_config if run_config is not None else load_config(DEFAULT_CONFIG)
    check_method(config)

    policy = load_trained_model(model_dir)
    base_model = run_config["base_model"] if run_config is not None else None
    reference_model, reference_name = choose_reference(policy, reference, base_model)
    if reference is None and is_adapter_folder(model_dir):
        reference_name = f"{base_model_of(model_dir, run_config)} ({reference_name})"

    tokenizer_path = model_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        tokenizer_path = base_tokenizer_file(base_model_of(model_dir, run_config))
    evaluate = evaluate_completions if config["trainer"]["type"] == "grpo" else evaluate_preferences
    result = evaluate(
        policy,
        reference_model,
        _core.Tokenizer(str(tokenizer_path)),
        config,
        dataset,
        batch_size=batch_size,
        max_samples=max_samples,
        model_name=str(model_dir),
        reference_name=reference_name,
    )

    json_path = _json_path(model_dir, output)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
        logger.info("wrote the evaluation to %s", json_path)
    return result, json_path


def check_method(config: dict[str, Any]) -> None:
    """Raise NotImplementedError for a run whose method this module cannot evaluate."""
    method = config["trainer"]["type"]
    if method not in PREFERENCE_METHODS and method != "grpo":
        raise NotImplementedError(f"evaluating a model trained with {method!r} is not supported")


def _json_path(model_dir: Path, output: str | Path | None) -> Path | None:
    if output is not None:
        return Path(output)
    folder = run_folder(model_dir)
    if folder is None:
        logger.info("%s is not inside a run folder; pass an output path to save JSON", model_dir)
        return None
    return folder / EVALUATION_FILE


def evaluate_preferences(
    policy,
    reference,
    tokenizer: "_core.Tokenizer",
    config: dict[str, Any],
    dataset: str | Path,
    batch_size: int | None = None,
    max_samples: int | None = None,
    model_name: str = "model",
    reference_name: str = "reference",
) -> EvaluationResult:
    """Score ``dataset``'s pairs with ``policy`` and ``reference`` and compute the metrics.

    ``reference`` is an object whose ``activate()`` context yields the reference model, such as
    :class:`pyalign.models.ReferenceModel`. Columns, truncation, ``beta`` and the op backend
    come from ``config``.
    """
    trainer_config = config["trainer"]
    batch_size = _batch_size(batch_size, trainer_config, max_samples)
    implementation = config["backend"]["kernels"]
    ops.load_backend(implementation)

    columns = _pair_columns(config)
    table = read_preference_records(dataset, columns)
    num_records = len(table[columns.prompt])
    if max_samples is not None:
        table = {name: values[:max_samples] for name, values in table.items()}
    data = tokenize_pairs(table, columns, tokenizer, config["preprocessing"], str(dataset))

    device = _device_of(policy)
    policy_logps, reference_logps = _score_pairs(
        policy, reference, data, batch_size, implementation, device
    )

    method = trainer_config["type"]
    beta = trainer_config.get("beta") or DEFAULT_BETA
    metrics = _metrics(policy_logps, reference_logps, method, beta)
    return EvaluationResult(
        model=model_name,
        reference=reference_name,
        dataset=str(dataset),
        method=method,
        settings={"beta": beta},
        num_records=num_records,
        num_examples=len(data),
        unit="pairs",
        metrics=metrics,
        dropped=dict(data.drop_reasons),
    )


def _batch_size(batch_size: int | None, trainer_config: dict[str, Any], max_samples) -> int:
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}")
    batch_size = batch_size or trainer_config.get("eval_batch_size") or DEFAULT_BATCH_SIZE
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size


def _device_of(policy) -> torch.device:
    """Return the device to evaluate on, moving a policy on the CPU to a GPU when there is one."""
    device = next(policy.parameters()).device
    if device.type == "cpu" and torch.cuda.is_available():
        device = torch.device("cuda")
        policy.to(device)
    return device


def _pair_columns(config: dict[str, Any]) -> PreferenceColumns:
    if config["trainer"]["type"] in PAIR_METHODS:
        return PreferenceColumns.from_config(config)
    # A KTO run trains on single labelled responses; its held-out pairs use the DPO columns
    # that `pyalign prepare` writes.
    return PreferenceColumns(
        prompt=config["input_features"][0]["name"], chosen="chosen", rejected="rejected"
    )


@torch.no_grad()
def _score_pairs(policy, reference, data, batch_size, implementation, device):
    was_training = policy.training
    policy.eval()
    policy_parts, reference_parts = [], []
    try:
        for batch in data.batches(batch_size, shuffle=False):
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            policy_parts.append(_pair_logps(policy, batch, implementation))
            with reference.activate() as reference_model:
                reference_model.to(device)
                reference_parts.append(_pair_logps(reference_model, batch, implementation))
    finally:
        policy.train(was_training)
    return _concatenate(policy_parts), _concatenate(reference_parts)


def _pair_logps(model, batch: dict[str, torch.Tensor], implementation: str) -> PreferenceLogps:
    # The same scoring as training: summed response log-probabilities from the fused op.
    decoder, head = decoder_and_head(model)
    outputs = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hidden_states, bias = head.op_inputs(outputs.last_hidden_state)  # (2P, T, H)
    result = ops.sequence_logprobs(
        hidden_states,
        head.weight,
        bias,
        batch["input_ids"],
        batch["label_mask"],
        implementation=implementation,
    )
    return PreferenceLogps.from_concatenated(result.sum)


def _concatenate(parts: list[PreferenceLogps]) -> PreferenceLogps:
    return PreferenceLogps(
        chosen=torch.cat([part.chosen for part in parts]),
        rejected=torch.cat([part.rejected for part in parts]),
    )


def _metrics(
    policy: PreferenceLogps, reference: PreferenceLogps, method: str, beta: float
) -> dict[str, float]:
    """Compute DPO's implicit-reward metrics, as ``pyalign.losses.dpo_loss`` defines them."""
    chosen_rewards = beta * (policy.chosen - reference.chosen)  # (P,)
    rejected_rewards = beta * (policy.rejected - reference.rejected)  # (P,)
    margins = chosen_rewards - rejected_rewards
    computed = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "rewards/margins": margins.mean(),
        "logps/chosen": policy.chosen.mean(),
        "logps/rejected": policy.rejected.mean(),
        "logps/accuracies": (policy.chosen > policy.rejected).float().mean(),
        "reference/logps/chosen": reference.chosen.mean(),
        "reference/logps/rejected": reference.rejected.mean(),
        "reference/logps/accuracies": (reference.chosen > reference.rejected).float().mean(),
    }
    if method == "dpo":
        # The sigmoid DPO loss: -log sigmoid(r_c - r_r), averaged over the pairs.
        computed["loss"] = -torch.nn.functional.logsigmoid(margins).mean()
    return {name: computed[name].item() for name in METRIC_ORDER if name in computed}


def evaluate_completions(
    policy,
    reference,
    tokenizer: "_core.Tokenizer",
    config: dict[str, Any],
    dataset: str | Path,
    batch_size: int | None = None,
    max_samples: int | None = None,
    model_name: str = "model",
    reference_name: str = "reference",
) -> EvaluationResult:
    """Sample completions of ``dataset``'s prompts with ``policy`` and ``reference``, and score
    them with the GRPO run's reward functions.

    ``batch_size`` counts completions per ``generate`` call, rounded down to whole groups of
    ``num_generations``. Both models sample from the same seed, so they see the same noise.
    """
    from pyalign.data import PromptColumns, read_prompt_records, tokenize_prompts
    from pyalign.trainers import rewards

    trainer_config = config["trainer"]
    batch_size = _batch_size(batch_size, trainer_config, max_samples)
    columns = PromptColumns.from_config(config)
    table = read_prompt_records(dataset, columns)
    num_records = len(table[columns.prompt])
    if max_samples is not None:
        table = {name: values[:max_samples] for name, values in table.items()}
    data = tokenize_prompts(table, columns, tokenizer, config["preprocessing"], str(dataset))

    functions = rewards.load_reward_functions(
        trainer_config["reward_functions"], tokenizer.eos_token_id
    )
    sampler = _CompletionSampler(config, data, tokenizer, functions, batch_size)
    device = _device_of(policy)
    metrics = sampler.metrics(policy, device)
    with reference.activate() as reference_model:
        reference_model.to(device)
        reference_metrics = sampler.metrics(reference_model, device)
    metrics.update({f"reference/{name}": value for name, value in reference_metrics.items()})

    return EvaluationResult(
        model=model_name,
        reference=reference_name,
        dataset=str(dataset),
        method="grpo",
        settings={
            name: trainer_config[name]
            for name in ("num_generations", "temperature", "top_p", "max_completion_length")
        },
        num_records=num_records,
        num_examples=len(data),
        unit="prompts",
        metrics=dict(sorted(metrics.items(), key=_grpo_metric_order)),
        dropped=dict(data.drop_reasons),
    )


def _grpo_metric_order(item: tuple[str, float]) -> tuple[int, bool, str]:
    # reward first, then each function, then lengths; each policy value before the reference's.
    name = item[0]
    plain = name.removeprefix("reference/")
    if plain == "reward":
        group = 0
    elif plain.startswith("rewards/"):
        group = 1
    else:
        group = 2
    return group, name.startswith("reference/"), plain


class _CompletionSampler:
    """Sample G completions per prompt and score them, with the settings of a GRPO run."""

    def __init__(self, config, data, tokenizer, functions, batch_size: int):
        from transformers import GenerationConfig

        trainer_config = config["trainer"]
        self.data = data
        self.functions = functions
        self.weights = trainer_config["reward_weights"] or [1.0] * len(functions)
        self.group_size = trainer_config["num_generations"]
        self.prompts_per_batch = max(1, batch_size // self.group_size)
        self.seed = trainer_config["seed"]
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        # The sampling settings of GRPOTrainer; top_k=0 turns off transformers' top-k of 50.
        self.generation_config = GenerationConfig(
            do_sample=True,
            temperature=trainer_config["temperature"],
            top_p=trainer_config["top_p"],
            top_k=0,
            max_new_tokens=trainer_config["max_completion_length"],
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=self.eos_token_id,
        )

    @torch.no_grad()
    def metrics(self, model, device: torch.device) -> dict[str, float]:
        from pyalign.trainers.grpo import left_pad, mask_after_first_eos

        totals, tables, lengths, truncated = [], [], [], []
        was_training = model.training
        model.eval()
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                for indices in self.data.batches(self.prompts_per_batch, shuffle=False):
                    rows = [int(index) for index in indices for _ in range(self.group_size)]
                    prompt_ids, prompt_mask = left_pad(
                        [self.data.prompt_ids[row] for row in rows], self.tokenizer.pad_token_id
                    )  # (B, Tp) each
                    sequences = model.generate(
                        input_ids=prompt_ids.to(device),
                        attention_mask=prompt_mask.to(device),
                        generation_config=self.generation_config,
                    )  # (B, Tp + Tc)
                    completion_ids = sequences[:, prompt_ids.shape[1] :].cpu()  # (B, Tc)
                    mask, clipped = mask_after_first_eos(completion_ids, self.eos_token_id)
                    table, total = self._score(rows, completion_ids, mask)
                    totals.append(total)
                    tables.append(table)
                    lengths.append(mask.sum(dim=1).double())
                    truncated.append(clipped)
        finally:
            model.train(was_training)
        return self._summarise(totals, tables, lengths, truncated)

    def _score(self, rows, completion_ids, mask):
        from pyalign.trainers import rewards

        ids = [row_ids[row_mask].tolist() for row_ids, row_mask in zip(completion_ids, mask)]
        texts = [self.tokenizer.decode(row_ids, skip_special_tokens=True) for row_ids in ids]
        columns = {
            name: [values[row] for row in rows] for name, values in self.data.reward_columns.items()
        }

        def describe_row(position: int) -> str:
            return f"record {self.data.record_numbers[rows[position]]} of {self.data.source}"

        return rewards.score_completions(
            self.functions,
            self.weights,
            [self.data.prompts[row] for row in rows],
            texts,
            ids,
            columns,
            describe_row,
        )

    def _summarise(self, totals, tables, lengths, truncated) -> dict[str, float]:
        import numpy as np

        table = np.concatenate(tables)  # (R, F)
        metrics = {"reward": float(np.concatenate(totals).mean())}
        for index, function in enumerate(self.functions):
            values = table[:, index]
            values = values[~np.isnan(values)]
            if values.size:
                metrics[f"rewards/{function.name}/mean"] = float(values.mean())
        metrics["completions/mean_length"] = float(torch.cat(lengths).mean())
        metrics["completions/clipped_ratio"] = float(torch.cat(truncated).float().mean())
        return metrics
