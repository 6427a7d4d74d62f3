"""The training loop every trainer shares: AdamW, the learning-rate schedule, gradient
accumulation, logging, metric sinks and periodic held-out evaluation.

One optimizer step consumes ``gradient_accumulation_steps`` micro-batches of ``batch_size``
examples (pairs for DPO and ORPO, rows for KTO, completions for GRPO). A subclass defines how a
micro-batch becomes a loss (:meth:`Trainer.compute_loss`), how much it weighs in the step
(:meth:`Trainer.batch_weight`) and how the held-out set is scored
(:meth:`Trainer.evaluation_metrics`); this module does the rest.
"""

from __future__ import annotations

import logging
import math
import random
import resource
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from pyalign import ops
from pyalign.models import decoder_and_head

logger = logging.getLogger(__name__)

# Called with ("train" | "eval", record) whenever a record is logged.
MetricSink = Callable[[str, dict], None]


@dataclass
class TrainingStatistics:
    """Metrics logged during training: one entry per logging step and per evaluation."""

    train: list[dict[str, float]] = field(default_factory=list)
    eval: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train, "eval": self.eval, "summary": self.summary}


@dataclass
class LossOutput:
    """The loss of one micro-batch and its detached metrics.

    ``metric_weights`` gives, per metric, the number of examples its value averages over, for
    metrics that cover only part of the batch (KTO's desirable rows, for example). Metrics not
    named there weigh as much as the batch (:meth:`Trainer.batch_weight`).
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float]
    metric_weights: dict[str, float] = field(default_factory=dict)


class MetricAccumulator:
    """Combine the metrics of the micro-batches of one step or one evaluation.

    A metric is a weighted mean over micro-batches, except names starting with ``count/``
    (summed), and names ending in ``_min`` or ``_max`` (the smallest or largest value).
    """

    def __init__(self):
        self.totals: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, metrics: dict[str, Any], weight: float, metric_weights: dict | None = None):
        metric_weights = metric_weights or {}
        for name, value in metrics.items():
            value = float(value)
            if name.startswith("count/"):
                self.totals[name] = self.totals.get(name, 0.0) + value
            elif name.endswith("_min"):
                self.totals[name] = min(self.totals.get(name, value), value)
            elif name.endswith("_max"):
                self.totals[name] = max(self.totals.get(name, value), value)
            else:
                name_weight = float(metric_weights.get(name, weight))
                if name_weight <= 0:
                    continue
                self.totals[name] = self.totals.get(name, 0.0) + value * name_weight
                self.weights[name] = self.weights.get(name, 0.0) + name_weight

    def result(self) -> dict[str, float]:
        record = {}
        for name, total in self.totals.items():
            if name in self.weights:
                record[name] = total / self.weights[name]
            else:
                record[name] = total
        return record


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sequence_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    label_mask: torch.Tensor,
    implementation: str,
    position_ids: torch.Tensor | None = None,
) -> ops.SequenceLogprobs:
    """Run the decoder and score the tokens of ``label_mask`` with the fused op.

    ``position_ids`` is needed for left-padded sequences; right-padded ones count from 0.
    """
    decoder, head = decoder_and_head(model)
    outputs = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    hidden_states, bias = head.op_inputs(outputs.last_hidden_state)  # (B, T, H)
    return ops.sequence_logprobs(
        hidden_states,
        head.weight,
        bias,
        input_ids,
        label_mask,
        implementation=implementation,
    )


def peak_memory() -> dict[str, int]:
    """Return the process's peak resident set size, and the peak CUDA allocation, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    peak_bytes = peak if sys.platform == "darwin" else peak * 1024
    memory = {"peak_rss_bytes": int(peak_bytes)}
    if torch.cuda.is_available():
        memory["peak_cuda_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    return memory


class Trainer:
    """The shared loop. Subclasses set ``name`` and implement the hooks below."""

    name = "train"

    def __init__(
        self,
        config: dict[str, Any],
        model,
        train_data,
        eval_data,
        device: torch.device,
        metric_sinks: Sequence[MetricSink] = (),
    ):
        self.config = config
        self.trainer_config = config["trainer"]
        self.model = model
        self.train_data = train_data
        self.eval_data = eval_data
        self.device = device
        self.implementation = config["backend"]["kernels"]
        self.metric_sinks = list(metric_sinks)
        self.statistics = TrainingStatistics()

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

    # Hooks

    @property
    def examples_per_batch(self) -> int:
        """Dataset records one micro-batch consumes (GRPO: prompts, not completions)."""
        return self.trainer_config["batch_size"]

    def batch_weight(self, batch) -> float:
        """Return the micro-batch's share of the step's loss, before normalising."""
        raise NotImplementedError

    def compute_loss(self, batch) -> LossOutput:
        raise NotImplementedError

    def evaluation_metrics(self) -> dict[str, float]:
        """Return the metrics over the whole held-out set, without the ``eval/`` prefix."""
        raise NotImplementedError

    def step_batches(self, batches: Iterator[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """Return the (epoch, micro-batch) list of the next optimizer step."""
        return [next(batches) for _ in range(self.trainer_config["gradient_accumulation_steps"])]

    def step_metrics(self) -> dict[str, float]:
        """Return metrics of the step that no single micro-batch has (GRPO's rewards)."""
        return {}

    def train_batches(self) -> Iterator[tuple[int, Any]]:
        """Yield (epoch, micro-batch) forever, reshuffling at each epoch."""
        generator = torch.Generator().manual_seed(self.trainer_config["seed"])
        epoch = 0
        while True:
            for batch in self.train_data.batches(
                self.trainer_config["batch_size"], shuffle=True, generator=generator
            ):
                yield epoch, self.to_device(batch)
            epoch += 1

    def progress_postfix(self, record: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{record['loss']:.4f}"}

    def summary(self) -> dict[str, Any]:
        """Return the trainer's own entries of ``TrainingStatistics.summary``."""
        return {}

    # Schedule

    def _count_total_steps(self) -> int:
        if self.trainer_config["max_steps"] is not None:
            return self.trainer_config["max_steps"]
        batches_per_epoch = math.ceil(len(self.train_data) / self.examples_per_batch)
        steps_per_epoch = math.ceil(
            batches_per_epoch / self.trainer_config["gradient_accumulation_steps"]
        )
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

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: tensor.to(self.device) for name, tensor in batch.items()}

    # Loop

    def train(self) -> TrainingStatistics:
        logging_steps = self.trainer_config["logging_steps"]
        eval_interval = self._eval_interval()
        max_grad_norm = self.trainer_config["max_grad_norm"]
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        logger.info(
            "training %s: %d %s, %d optimizer steps of %d x %d",
            self.name,
            len(self.train_data),
            self.train_data.unit,
            self.total_steps,
            self.trainer_config["batch_size"],
            self.trainer_config["gradient_accumulation_steps"],
        )

        self.evaluate(step=0)
        batches = self.train_batches()
        progress = tqdm(total=self.total_steps, desc=self.name, unit="step", dynamic_ncols=True)
        epoch = 0
        for step in range(1, self.total_steps + 1):
            self.model.train()
            group = self.step_batches(batches)
            epoch = group[-1][0]
            record = self._accumulate_gradients([batch for _, batch in group])

            # With clipping off, an infinite bound makes clip_grad_norm_ only measure the norm.
            bound = math.inf if max_grad_norm is None else max_grad_norm
            record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(trainable, bound))
            learning_rate = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

            record.update(self.step_metrics())
            record.update(step=step, epoch=epoch, learning_rate=learning_rate)
            progress.update(1)
            progress.set_postfix(self.progress_postfix(record))
            if step % logging_steps == 0 or step == self.total_steps:
                self._log("train", record)
            if step % eval_interval == 0 and step != self.total_steps:
                self.evaluate(step=step)
        progress.close()
        self.evaluate(step=self.total_steps)

        self.statistics.summary = {
            "trainer_type": self.name,
            "total_steps": self.total_steps,
            "epochs_started": epoch + 1,
            f"train_{self.train_data.unit}": len(self.train_data),
            f"eval_{self.train_data.unit}": 0 if self.eval_data is None else len(self.eval_data),
            **self.summary(),
            **peak_memory(),
        }
        return self.statistics

    def _accumulate_gradients(self, group: list) -> dict[str, float]:
        """Run forward and backward on each micro-batch; return the step's averaged metrics."""
        weights = [self.batch_weight(batch) for batch in group]
        total_weight = sum(weights)
        accumulator = MetricAccumulator()
        for batch, weight in zip(group, weights):
            output = self.compute_loss(batch)
            # Weight each micro-batch by its share of the step, so the step's gradient is the
            # mean over all of its examples, also when the last micro-batch is short.
            share = weight / total_weight if total_weight > 0 else 0.0
            if output.loss.requires_grad and share > 0:
                (output.loss * share).backward()
            accumulator.add({"loss": output.loss.detach()}, weight)
            accumulator.add(output.metrics, weight, output.metric_weights)
        record = accumulator.result()
        # A step whose micro-batches all weigh 0 (GRPO with every completion masked out) has
        # no loss to average and no gradient, so it is logged as loss 0.
        record.setdefault("loss", 0.0)
        return record

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float] | None:
        """Score the whole held-out set; the metrics are logged under ``eval/``."""
        if self.eval_data is None:
            return None
        was_training = self.model.training
        self.model.eval()
        try:
            metrics = self.evaluation_metrics()
        finally:
            self.model.train(was_training)
        record = {"step": step}
        record.update({f"eval/{name}": value for name, value in metrics.items()})
        self._log("eval", record)
        return record

    def _log(self, kind: str, record: dict[str, float]) -> None:
        if kind == "train":
            self.statistics.train.append(record)
            logger.info("step %d: %s", record["step"], format_metrics(record))
        else:
            self.statistics.eval.append(record)
            logger.info("eval at step %d: %s", record["step"], format_metrics(record))
        for sink in self.metric_sinks:
            sink(kind, dict(record))


def format_metrics(record: dict[str, float]) -> str:
    parts = []
    for name, value in record.items():
        if name in ("step", "epoch"):
            continue
        parts.append(f"{name}={value:.4g}")
    return " ".join(parts)
