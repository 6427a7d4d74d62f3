"""Trainers, one per ``trainer.type``, on one shared loop (``pyalign.trainers.base``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from pyalign.trainers.base import (
    LossOutput,
    MetricSink,
    Trainer,
    TrainingStatistics,
    seed_everything,
)
from pyalign.trainers.dpo import DPOTrainer
from pyalign.trainers.grpo import GRPOTrainer
from pyalign.trainers.kto import KTOTrainer
from pyalign.trainers.orpo import ORPOTrainer

__all__ = [
    "DPOTrainer",
    "GRPOTrainer",
    "KTOTrainer",
    "LossOutput",
    "MetricSink",
    "ORPOTrainer",
    "TRAINERS",
    "Trainer",
    "TrainingStatistics",
    "build_trainer",
    "seed_everything",
]

TRAINERS = {
    "dpo": DPOTrainer,
    "kto": KTOTrainer,
    "orpo": ORPOTrainer,
    "grpo": GRPOTrainer,
}


def build_trainer(
    config: dict[str, Any],
    model,
    train_data,
    eval_data,
    device: torch.device,
    metric_sinks: Sequence[MetricSink] = (),
) -> Trainer:
    """Return the trainer of ``config["trainer"]["type"]``, built on the prepared data."""
    trainer_class = TRAINERS[config["trainer"]["type"]]
    return trainer_class(config, model, train_data, eval_data, device, metric_sinks=metric_sinks)
