"""The DPO training loop: AdamW, gradient accumulation, periodic held-out evaluation.

One optimizer step consumes ``gradient_accumulation_steps`` batches of ``batch_size`` pairs.
Each batch holds its chosen and rejected sequences in one (2P, T) tensor, so the policy and the
reference each run one forward pass per batch. Sequence log-probabilities come from the fused op
in ``pyalign.ops``, which reads the decoder's hidden states and the LM head weight and never
materialises the (tokens x vocabulary) logits.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pyalign import ops
from pyalign.data import PreferenceData
from pyalign.losses import DPOLoss, PreferenceLogps
from pyalign.models import ReferenceModel, decoder_and_head

logger = logging.getLogger(__name__)


@dataclass
class TrainingStatistics:
    """Metrics logged during training: one entry per logging step and per evaluation."""

    train: list[dict[str, float]] = field(default_factory=list)
    eval: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train, "eval": self.eval, "summary": self.summary}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sequence_logps(model, batch: dict[str, torch.Tensor], implementation: str) -> torch.Tensor:
    """Return the summed response log-probability of every sequence in a batch. Shape: (2P,)."""
    decoder, head = decoder_and_head(model)
    outputs = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hidden_states = outputs.last_hidden_state  # (2P, T, H)
    result = ops.sequence_logprobs(
        hidden_states,
        head.weight,
        head.bias,
        batch["input_ids"],
        batch["label_mask"],
        implementation=implementation,
    )
    return result.sum


class DPOTrainer:
    """Train a policy against a frozen reference with the DPO loss."""

    def __init__(
        self,
        config: dict[str, Any],
        model,
        train_data: PreferenceData,
        eval_data: PreferenceData | None,
        device: torch.device,
    ):
        self.config = config
        self.trainer_config = config["trainer"]
        self.model = model
        self.train_data = train_data
        self.eval_data = eval_data
        self.device = device
        self.implementation = config["backend"]["kernels"]
        self.loss = DPOLoss(beta=self.trainer_config["beta"], loss_type=self.trainer_config["loss_type"])
        self.reference = ReferenceModel(model)
        self.statistics = TrainingStatistics()
        self._eval_reference_logps: list[PreferenceLogps] | None = None

        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            trainable,
            lr=self.trainer_config["learning_rate"],
            weight_decay=self.trainer_config["weight_decay"],
        )
        self.total_steps = self._count_total_steps()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, self._learning_rate_factor
        )

    # Schedule

    def _count_total_steps(self) -> int:
        batches_per_epoch = math.ceil(len(self.train_data) / self.trainer_config["batch_size"])
        steps_per_epoch = math.ceil(
            batches_per_epoch / self.trainer_config["gradient_accumulation_steps"]
        )
        if self.trainer_config["max_steps"] is not None:
            return self.trainer_config["max_steps"]
        return steps_per_epoch * self.trainer_config["epochs"]

    def _learning_rate_factor(self, step: int) -> float:
        scheduler = self.trainer_config["learning_rate_scheduler"]
        warmup_steps = int(scheduler["warmup_fraction"] * self.total_steps)
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        decay = scheduler["decay"] or "none"
        if decay == "none":
            return 1.0
        progress = (step - warmup_steps) / max(1, self.total_steps - warmup_steps)
        if decay == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def _eval_interval(self) -> int:
        configured = self.trainer_config["eval_steps"]
        return configured if configured is not None else max(1, math.ceil(self.total_steps / 4))

    # Batches

    def _micro_batches(self):
        """Yield batches forever, reshuffling at each epoch, as (epoch, batch)."""
        generator = torch.Generator().manual_seed(self.trainer_config["seed"])
        epoch = 0
        while True:
            for batch in self.train_data.batches(
                self.trainer_config["batch_size"], shuffle=True, generator=generator
            ):
                yield epoch, {name: tensor.to(self.device) for name, tensor in batch.items()}
            epoch += 1

    def _policy_and_reference(self, batch):
        policy = PreferenceLogps.from_concatenated(
            sequence_logps(self.model, batch, self.implementation)
        )
        with self.reference.activate() as reference_model:
            reference = PreferenceLogps.from_concatenated(
                sequence_logps(reference_model, batch, self.implementation)
            )
        return policy, reference

    # Loop

    def train(self) -> TrainingStatistics:
        accumulation = self.trainer_config["gradient_accumulation_steps"]
        logging_steps = self.trainer_config["logging_steps"]
        eval_interval = self._eval_interval()
        max_grad_norm = self.trainer_config["max_grad_norm"]
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        logger.info(
            "training: %d pairs, %d optimizer steps of %d x %d pairs",
            len(self.train_data),
            self.total_steps,
            self.trainer_config["batch_size"],
            accumulation,
        )

        self.evaluate(step=0)
        batches = self._micro_batches()
        progress = tqdm(total=self.total_steps, desc="dpo", unit="step", dynamic_ncols=True)
        epoch = 0
        for step in range(1, self.total_steps + 1):
            self.model.train()
            group = [next(batches) for _ in range(accumulation)]
            epoch = group[-1][0]
            num_pairs = sum(batch["input_ids"].shape[0] // 2 for _, batch in group)
            totals: dict[str, float] = {}
            for _, batch in group:
                policy, reference = self._policy_and_reference(batch)
                loss, metrics = self.loss(policy, reference)
                batch_pairs = batch["input_ids"].shape[0] // 2
                # Weight each batch by its share of the step's pairs: the step's gradient is
                # then the mean over all of its pairs, also when the last batch is short.
                (loss * (batch_pairs / num_pairs)).backward()
                totals["loss"] = totals.get("loss", 0.0) + loss.item() * batch_pairs
                for name, value in metrics.items():
                    totals[name] = totals.get(name, 0.0) + value.item() * batch_pairs

            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
            learning_rate = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

            record = {name: value / num_pairs for name, value in totals.items()}
            record.update(step=step, epoch=epoch, learning_rate=learning_rate)
            progress.update(1)
            progress.set_postfix(
                loss=f"{record['loss']:.4f}", acc=f"{record['rewards/accuracies']:.2f}"
            )
            if step % logging_steps == 0 or step == self.total_steps:
                self.statistics.train.append(record)
                logger.info("step %d: %s", step, _format_metrics(record))
            if step % eval_interval == 0 and step != self.total_steps:
                self.evaluate(step=step)
        progress.close()
        self.evaluate(step=self.total_steps)
        self.statistics.summary = {
            "total_steps": self.total_steps,
            "epochs_started": epoch + 1,
            "train_pairs": len(self.train_data),
            "eval_pairs": len(self.eval_data) if self.eval_data is not None else 0,
        }
        return self.statistics

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float] | None:
        """Compute the loss and metrics over the whole held-out set, logged under ``eval/``."""
        if self.eval_data is None:
            return None
        batch_size = self.trainer_config["eval_batch_size"] or self.trainer_config["batch_size"]
        was_training = self.model.training
        self.model.eval()
        cache_reference = self._eval_reference_logps is None
        if cache_reference:
            self._eval_reference_logps = []
        policy_parts, reference_parts = [], []
        for index, batch in enumerate(self.eval_data.batches(batch_size, shuffle=False)):
            batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
            policy_parts.append(
                PreferenceLogps.from_concatenated(
                    sequence_logps(self.model, batch, self.implementation)
                )
            )
            # The reference never changes, so its log-probabilities are computed once.
            if cache_reference:
                with self.reference.activate() as reference_model:
                    self._eval_reference_logps.append(
                        PreferenceLogps.from_concatenated(
                            sequence_logps(reference_model, batch, self.implementation)
                        )
                    )
            reference_parts.append(self._eval_reference_logps[index])
        self.model.train(was_training)

        policy = _concatenate(policy_parts)
        reference = _concatenate(reference_parts)
        loss, metrics = self.loss(policy, reference)
        record = {"step": step, "eval/loss": loss.item()}
        record.update({f"eval/{name}": value.item() for name, value in metrics.items()})
        self.statistics.eval.append(record)
        logger.info("eval at step %d: %s", step, _format_metrics(record))
        return record


def _concatenate(parts: list[PreferenceLogps]) -> PreferenceLogps:
    return PreferenceLogps(
        chosen=torch.cat([part.chosen for part in parts]),
        rejected=torch.cat([part.rejected for part in parts]),
    )


def _format_metrics(record: dict[str, float]) -> str:
    shown = []
    for name, value in record.items():
        if name in ("step", "epoch"):
            continue
        shown.append(f"{name}={value:.4g}")
    return " ".join(shown)
