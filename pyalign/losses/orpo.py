"""Odds Ratio Preference Optimization loss.

Hong et al., "ORPO: Monolithic Preference Optimization without Reference Model" (2024),
https://arxiv.org/abs/2403.07691, eqs. 4-7. With the average per-token log-probabilities
``a_c = pi_c / n_c`` and ``a_r = pi_r / n_r`` of the chosen and rejected responses, the log odds
of ``p = exp(a)`` are ``a - log(1 - exp(a))``, and

    L_OR = -log sigmoid(log odds_c - log odds_r)
    loss = nll + beta * mean_p L_OR

where ``nll = -sum_p pi_c / sum_p n_c`` is the chosen responses' negative log-likelihood per token
over the batch. ``log(1 - exp(a))`` is evaluated in the branch that is accurate for ``a``. ``a``
is clamped to at most -1e-6 (log odds about 13.8), so that average log-probabilities at or
above 0 give finite values and gradients. A clamped side gets no gradient from L_OR.

TRL 1.16's ORPOTrainer computes the same odds-ratio term, but its NLL covers the prompt tokens
too; here it covers the response tokens that ``chosen_tokens`` counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pyalign.losses import _dispatch
from pyalign.losses.dpo import PreferenceLogps, chosen_nll

__all__ = ["ORPOLoss", "check_orpo_hyperparameters", "orpo_loss"]


def orpo_loss(
    policy: PreferenceLogps, beta: float, *, implementation: str = "native"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Compute the ORPO loss and its metrics for one batch of P pairs.

    Args:
        policy: the policy's summed log-probabilities and token counts, shape (P,) each.
        beta: the weight lambda of the odds-ratio term.
        implementation: "native" for the C++ op ``pyalign::orpo_loss``, "torch" for its twin.

    Returns:
        The loss (a scalar with gradient) and detached scalar metrics named as TRL's
        ORPOTrainer logs them: ``rewards/chosen`` and ``rewards/rejected`` (means of
        ``beta * a``), ``rewards/accuracies`` (share of pairs with a_c > a_r: a tie counts as not
        correct), ``rewards/margins``, ``logps/chosen`` and ``logps/rejected`` (means of a),
        ``log_odds_ratio`` (mean of ``log sigmoid(log odds_c - log odds_r)``),
        ``log_odds_chosen`` (mean of ``log odds_c - log odds_r``) and ``nll_loss``.
    """
    check_orpo_hyperparameters(beta)
    _check_orpo_inputs(policy)

    losses, log_odds = _dispatch.orpo_pair_losses(policy, beta, implementation)  # (P,) each
    nll = chosen_nll(policy)
    loss = nll + losses.mean()

    chosen_mean = policy.chosen_mean().detach().to(log_odds.dtype)  # (P,)
    rejected_mean = policy.rejected_mean().detach().to(log_odds.dtype)  # (P,)
    chosen_rewards = beta * chosen_mean
    rejected_rewards = beta * rejected_mean
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/chosen": chosen_mean.mean(),
        "logps/rejected": rejected_mean.mean(),
        "log_odds_ratio": F.logsigmoid(log_odds).mean(),
        "log_odds_chosen": log_odds.mean(),
        "nll_loss": nll.detach(),
    }
    return loss, metrics


def check_orpo_hyperparameters(beta: float) -> None:
    """Raise ValueError when beta is not positive."""
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"ORPO beta must be finite and greater than 0, got {beta}")


class ORPOLoss(torch.nn.Module):
    """:func:`orpo_loss` as a module whose hyper-parameters are checked at construction."""

    def __init__(self, beta: float = 0.1, *, implementation: str = "native"):
        super().__init__()
        check_orpo_hyperparameters(beta)
        _dispatch.check_implementation(implementation)
        self.beta = beta
        self.implementation = implementation

    def forward(self, policy: PreferenceLogps):
        return orpo_loss(policy, self.beta, implementation=self.implementation)


def _check_orpo_inputs(policy: PreferenceLogps) -> None:
    if policy.chosen_tokens is None or policy.rejected_tokens is None:
        raise ValueError(
            "ORPO needs the token counts of the chosen and rejected responses; set "
            "PreferenceLogps.chosen_tokens and rejected_tokens from SequenceLogprobs.count"
        )
    shape = tuple(policy.chosen.shape)
    if len(shape) != 1:
        raise ValueError(f"PreferenceLogps.chosen must have shape (P,), got {shape}")
    if shape == (0,):
        raise ValueError("ORPO needs at least one chosen/rejected pair, got an empty batch")
    for name in ("rejected", "chosen_tokens", "rejected_tokens"):
        tensor = getattr(policy, name)
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"PreferenceLogps.{name} must have shape (P,) = {shape} like chosen, "
                f"got {tuple(tensor.shape)}"
            )
