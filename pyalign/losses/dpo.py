"""Direct Preference Optimization loss.

Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model"
(2023), https://arxiv.org/abs/2305.18290. With policy log-probabilities ``pi_c``, ``pi_r`` and
reference log-probabilities ``ref_c``, ``ref_r`` of the chosen and rejected responses (each the
sum over response tokens), the implicit rewards are

    r_c = beta * (pi_c - ref_c)        r_r = beta * (pi_r - ref_r)

and the sigmoid loss is ``-log sigmoid(r_c - r_r)``, averaged over the P pairs of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pyalign.config import DPO_LOSS_TYPES


@dataclass
class PreferenceLogps:
    """Per-pair sequence log-probabilities of the chosen and rejected responses. Shape: (P,)."""

    chosen: torch.Tensor
    rejected: torch.Tensor

    @classmethod
    def from_concatenated(cls, logps: torch.Tensor) -> "PreferenceLogps":
        """Split a (2P,) tensor laid out chosen first, then rejected."""
        num_pairs = logps.shape[0] // 2
        return cls(chosen=logps[:num_pairs], rejected=logps[num_pairs:])


def dpo_loss(
    policy: PreferenceLogps,
    reference: PreferenceLogps,
    beta: float,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Compute the DPO loss and its metrics for one batch of P pairs.

    Returns the mean loss (a scalar with gradient) and detached metrics, each a scalar mean
    over the batch: ``rewards/chosen`` (r_c), ``rewards/rejected`` (r_r), ``rewards/margins``
    (r_c - r_r), ``rewards/accuracies`` (share of pairs with r_c > r_r: a tie counts as not
    correct), ``logps/chosen`` and ``logps/rejected`` (pi_c and pi_r).
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected one of {DPO_LOSS_TYPES}")
    chosen_rewards = beta * (policy.chosen - reference.chosen)  # (P,)
    rejected_rewards = beta * (policy.rejected - reference.rejected)  # (P,)
    margins = chosen_rewards - rejected_rewards
    losses = -F.logsigmoid(margins)

    metrics = {
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "rewards/margins": margins.detach().mean(),
        "logps/chosen": policy.chosen.detach().mean(),
        "logps/rejected": policy.rejected.detach().mean(),
    }
    return losses.mean(), metrics


class DPOLoss(torch.nn.Module):
    """DPO loss as a module whose hyper-parameters are checked at construction."""

    def __init__(self, beta: float = 0.1, loss_type: str = "sigmoid"):
        super().__init__()
        if not beta > 0:
            raise ValueError(f"DPO beta must be greater than 0, got {beta}")
        if loss_type not in DPO_LOSS_TYPES:
            raise ValueError(
                f"unknown DPO loss_type {loss_type!r}; expected one of {DPO_LOSS_TYPES}"
            )
        self.beta = beta
        self.loss_type = loss_type

    def forward(self, policy: PreferenceLogps, reference: PreferenceLogps):
        return dpo_loss(policy, reference, self.beta, self.loss_type)
