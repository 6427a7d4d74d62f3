"""KTO: a policy trained on single responses labelled desirable or undesirable.

Each batch of B rows runs the policy with gradients on the rows themselves, and the policy
(without gradients) and the reference on B mismatched pairs: each row's prompt joined with the
response of another row of the batch (``pyalign.data.kl_partner_indices``). The mean log-ratio
on those pairs, clamped at 0 and detached, is the reference point z0 of the KTO loss
(``pyalign.losses.kto``). The reference is the policy with its LoRA adapters disabled, or a
frozen copy under full fine-tuning.
"""

from __future__ import annotations

import logging

import torch

from pyalign.data import ResponseData
from pyalign.losses import KTOLoss, kto_kl
from pyalign.models import ReferenceModel
from pyalign.trainers.base import LossOutput, MetricAccumulator, Trainer, sequence_logprobs

logger = logging.getLogger(__name__)

# The recommended range of desirable_weight * n_desirable / (undesirable_weight * n_undesirable),
# as TRL 1.16's KTOTrainer checks it, citing eq. 8 of the KTO paper (Ethayarajh et al. 2024).
RECOMMENDED_WEIGHTED_RATIO = (1.0, 4.0 / 3.0)

# Metrics that average over the desirable or the undesirable rows of a batch only.
DESIRABLE_METRICS = ("rewards/chosen", "logps/chosen")
UNDESIRABLE_METRICS = ("rewards/rejected", "logps/rejected")


class KTOTrainer(Trainer):
    """Train with the KTO loss on labelled rows."""

    name = "kto"

    def __init__(self, config, model, train_data: ResponseData, eval_data, device, **kwargs):
        trainer = config["trainer"]
        self.loss = KTOLoss(
            beta=trainer["beta"],
            desirable_weight=trainer["desirable_weight"],
            undesirable_weight=trainer["undesirable_weight"],
            implementation=config["backend"]["kernels"],
        )
        super().__init__(config, model, train_data, eval_data, device, **kwargs)
        self.reference = ReferenceModel(model)
        self._eval_reference: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        warn_about_weighted_ratio(
            train_data.num_desirable,
            train_data.num_undesirable,
            trainer["desirable_weight"],
            trainer["undesirable_weight"],
        )

    def batch_weight(self, batch) -> float:
        return batch["input_ids"].shape[0]

    def compute_loss(self, batch) -> LossOutput:
        policy = self._logps(self.model, batch, "")
        # z0 is detached, so the policy's pass over the mismatched pairs needs no gradient.
        with torch.no_grad():
            policy_kl = self._logps(self.model, batch, "kl_")
        with self.reference.activate() as reference_model:
            reference = self._logps(reference_model, batch, "")
            reference_kl = self._logps(reference_model, batch, "kl_")
        return self._loss_output(batch, policy, reference, policy_kl, reference_kl)

    def progress_postfix(self, record):
        return {"loss": f"{record['loss']:.4f}", "kl": f"{record['kl']:.3f}"}

    def evaluation_metrics(self) -> dict[str, float]:
        """Average the loss and metrics of the held-out batches, each with its own z0.

        The batches come in one fixed shuffled order, so that the mismatched pairs join
        unrelated rows (neighbouring rows of a file often share a prompt), and the reference's
        log-probabilities are computed once and reused.
        """
        batch_size = self.trainer_config["eval_batch_size"] or self.trainer_config["batch_size"]
        generator = torch.Generator().manual_seed(self.trainer_config["seed"])
        batches = self.eval_data.batches(batch_size, shuffle=True, generator=generator)
        cache_reference = self._eval_reference is None
        if cache_reference:
            self._eval_reference = []

        accumulator = MetricAccumulator()
        for index, batch in enumerate(batches):
            batch = self.to_device(batch)
            if cache_reference:
                with self.reference.activate() as reference_model:
                    self._eval_reference.append(
                        (
                            self._logps(reference_model, batch, ""),
                            self._logps(reference_model, batch, "kl_"),
                        )
                    )
            reference, reference_kl = self._eval_reference[index]
            policy = self._logps(self.model, batch, "")
            policy_kl = self._logps(self.model, batch, "kl_")
            output = self._loss_output(batch, policy, reference, policy_kl, reference_kl)
            weight = self.batch_weight(batch)
            accumulator.add({"loss": output.loss}, weight)
            accumulator.add(output.metrics, weight, output.metric_weights)
        return finish_kto_record(accumulator.result())

    def _accumulate_gradients(self, group):
        return finish_kto_record(super()._accumulate_gradients(group))

    def summary(self):
        return {
            "desirable_rows": self.train_data.num_desirable,
            "undesirable_rows": self.train_data.num_undesirable,
        }

    def _logps(self, model, batch, prefix: str) -> torch.Tensor:
        result = sequence_logprobs(
            model,
            batch[prefix + "input_ids"],
            batch[prefix + "attention_mask"],
            batch[prefix + "label_mask"],
            self.implementation,
        )
        return result.sum  # (B,)

    def _loss_output(self, batch, policy, reference, policy_kl, reference_kl) -> LossOutput:
        labels = batch["labels"]
        kl = kto_kl(policy_kl, reference_kl)
        loss, metrics = self.loss(policy, reference, labels, kl)
        num_desirable = int(labels.sum())
        weights = {name: num_desirable for name in DESIRABLE_METRICS}
        weights.update({name: labels.numel() - num_desirable for name in UNDESIRABLE_METRICS})
        # The margin of the step is recomputed from the averaged rewards (finish_kto_record).
        metrics.pop("rewards/margins", None)
        return LossOutput(loss, metrics, weights)


def finish_kto_record(record: dict[str, float]) -> dict[str, float]:
    """Add ``rewards/margins`` when both classes were seen; a missing class adds nothing."""
    if "rewards/chosen" in record and "rewards/rejected" in record:
        record["rewards/margins"] = record["rewards/chosen"] - record["rewards/rejected"]
    return record


def warn_about_weighted_ratio(
    num_desirable: int, num_undesirable: int, desirable_weight: float, undesirable_weight: float
) -> None:
    """Warn when the weighted desirable:undesirable ratio is outside the recommended range."""
    low, high = RECOMMENDED_WEIGHTED_RATIO
    numbers = (
        f"desirable_weight {desirable_weight:g} x {num_desirable} desirable rows, "
        f"undesirable_weight {undesirable_weight:g} x {num_undesirable} undesirable rows"
    )
    if num_undesirable == 0 or num_desirable == 0:
        missing = "undesirable" if num_undesirable == 0 else "desirable"
        logger.warning(
            "KTO: the training set has no %s rows (%s); the loss then only moves the other class "
            "relative to the KL reference point",
            missing,
            numbers,
        )
        return
    ratio = desirable_weight * num_desirable / (undesirable_weight * num_undesirable)
    if not low <= ratio <= high:
        # The desirable_weight range that puts the ratio in range, the other weight unchanged.
        scale = undesirable_weight * num_undesirable / num_desirable
        logger.warning(
            "KTO: the weighted ratio desirable_weight * n_desirable / (undesirable_weight * "
            "n_undesirable) is %.3f (%s), outside the recommended range [1, 4/3]; for example "
            "set trainer.desirable_weight in [%.3g, %.3g]",
            ratio,
            numbers,
            scale * low,
            scale * high,
        )
