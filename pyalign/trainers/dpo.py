"""DPO and its variants: a policy trained on preference pairs, against a frozen reference.

Each batch holds its chosen and rejected sequences in one (2P, T) tensor, so the policy and the
reference each run one forward pass per batch. Sequence log-probabilities and token counts come
from the fused op in ``pyalign.ops``, which reads the decoder's hidden states and the LM head
weight and never materialises the (tokens x vocabulary) logits. The reference-free loss types
(``simpo``, ``cpo``) load no reference model and run no reference pass.
"""

from __future__ import annotations

import torch

from pyalign.losses import DPOLoss, PreferenceLogps
from pyalign.models import ReferenceModel
from pyalign.trainers.base import LossOutput, Trainer, sequence_logprobs


class PreferenceTrainer(Trainer):
    """The loop over preference pairs that DPO and ORPO share.

    Subclasses set ``needs_reference`` and implement :meth:`pair_loss`.
    """

    needs_reference = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reference = ReferenceModel(self.model) if self.needs_reference else None
        self._eval_reference_logps: list[PreferenceLogps] | None = None

    def pair_loss(self, policy: PreferenceLogps, reference: PreferenceLogps | None):
        raise NotImplementedError

    def batch_weight(self, batch) -> float:
        return batch["input_ids"].shape[0] // 2

    def compute_loss(self, batch) -> LossOutput:
        policy = self._pair_logps(self.model, batch)
        reference = None
        if self.reference is not None:
            with self.reference.activate() as reference_model:
                reference = self._pair_logps(reference_model, batch)
        loss, metrics = self.pair_loss(policy, reference)
        return LossOutput(loss, metrics)

    def progress_postfix(self, record):
        return {"loss": f"{record['loss']:.4f}", "acc": f"{record['rewards/accuracies']:.2f}"}

    def evaluation_metrics(self) -> dict[str, float]:
        """Compute the loss over the whole held-out set at once, as one batch of all its pairs."""
        batch_size = self.trainer_config["eval_batch_size"] or self.trainer_config["batch_size"]
        cache_reference = self.reference is not None and self._eval_reference_logps is None
        if cache_reference:
            self._eval_reference_logps = []
        policy_parts = []
        for batch in self.eval_data.batches(batch_size, shuffle=False):
            batch = self.to_device(batch)
            policy_parts.append(self._pair_logps(self.model, batch))
            # The reference never changes, so its log-probabilities are computed once.
            if cache_reference:
                with self.reference.activate() as reference_model:
                    self._eval_reference_logps.append(self._pair_logps(reference_model, batch))

        policy = concatenate_pairs(policy_parts)
        reference = None
        if self.reference is not None:
            reference = concatenate_pairs(self._eval_reference_logps)
        loss, metrics = self.pair_loss(policy, reference)
        record = {"loss": loss.item()}
        record.update({name: float(value) for name, value in metrics.items()})
        return record

    def summary(self):
        return {"reference_model": self.reference is not None}

    def _pair_logps(self, model, batch) -> PreferenceLogps:
        result = sequence_logprobs(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            batch["label_mask"],
            self.implementation,
        )
        return PreferenceLogps.from_concatenated(result.sum, result.count)


class DPOTrainer(PreferenceTrainer):
    """Train with a DPO-family loss: ``trainer.loss_type`` and its keys pick the variant."""

    name = "dpo"

    def __init__(self, config, *args, **kwargs):
        trainer = config["trainer"]
        self.loss = DPOLoss(
            beta=trainer["beta"],
            loss_type=trainer["loss_type"],
            label_smoothing=trainer["label_smoothing"],
            simpo_gamma=trainer["simpo_gamma"],
            rpo_alpha=trainer["rpo_alpha"],
            implementation=config["backend"]["kernels"],
        )
        self.needs_reference = self.loss.needs_reference
        super().__init__(config, *args, **kwargs)

    def pair_loss(self, policy, reference):
        return self.loss(policy, reference)


def concatenate_pairs(parts: list[PreferenceLogps]) -> PreferenceLogps:
    def join(name: str) -> torch.Tensor | None:
        values = [getattr(part, name) for part in parts]
        return None if values[0] is None else torch.cat(values)

    return PreferenceLogps(
        chosen=join("chosen"),
        rejected=join("rejected"),
        chosen_tokens=join("chosen_tokens"),
        rejected_tokens=join("rejected_tokens"),
    )
