"""Kahneman-Tversky Optimization loss.

Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization" (2024),
https://arxiv.org/abs/2402.01306, eq. 7. Each of the B rows is one completion labelled desirable
or undesirable. With the policy's and the reference's summed log-probabilities ``pi`` and
``ref``, the log-ratio ``r = pi - ref`` and the reference point ``z0`` (the KL estimate), the loss
of a row is

    desirable:    w_D * (1 - sigmoid(beta * (r - z0)))
    undesirable:  w_U * (1 - sigmoid(beta * (z0 - r)))

averaged over all B rows, as TRL 1.16's KTOTrainer does. ``z0`` is a detached scalar; TRL
estimates it as the clamped mean log-ratio on mismatched prompt/completion pairs, which is what
:func:`kto_kl` computes.
"""

from __future__ import annotations

import math

import torch

from pyalign.losses import _dispatch
from pyalign.ops.reference import loss_dtype

__all__ = ["KTOLoss", "check_kto_hyperparameters", "kto_kl", "kto_loss"]


def kto_kl(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor) -> torch.Tensor:
    """Estimate KTO's reference point: ``clamp(mean(policy - reference), min=0)``, detached.

    The result is float32, or float64 when an input is float64.

    Args:
        policy_kl_logps: the policy's summed log-probabilities of the mismatched completions.
            Shape: (B,).
        reference_kl_logps: the reference's, on the same completions. Shape: (B,).

    An empty batch gives 0.
    """
    if policy_kl_logps.shape != reference_kl_logps.shape:
        raise ValueError(
            f"policy_kl_logps and reference_kl_logps must have the same shape (B,), got "
            f"{tuple(policy_kl_logps.shape)} and {tuple(reference_kl_logps.shape)}"
        )
    dtype = loss_dtype(policy_kl_logps, reference_kl_logps)
    if policy_kl_logps.numel() == 0:
        return policy_kl_logps.new_zeros((), dtype=dtype)
    difference = policy_kl_logps.detach().to(dtype) - reference_kl_logps.detach().to(dtype)
    return difference.mean().clamp(min=0)


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    labels: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    *,
    implementation: str = "native",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Compute the KTO loss and its metrics for one batch of B completions.

    Args:
        policy_logps: the policy's summed log-probabilities. Shape: (B,).
        reference_logps: the reference's. Shape: (B,).
        labels: True for a desirable completion, False for an undesirable one. Shape: (B,) bool.
        kl: the reference point z0, a 0-d tensor; pass :func:`kto_kl`'s result (detached and
            at least 0). A gradient is returned for it if it requires one.
        beta: the inverse temperature.
        desirable_weight, undesirable_weight: w_D and w_U.
        implementation: "native" for the C++ op ``pyalign::kto_loss``, "torch" for its twin.

    Returns:
        The mean loss over the B rows, and detached scalar metrics. ``kl``, ``count/chosen`` and
        ``count/rejected`` (desirable and undesirable rows) are always there. Each class present
        in the batch adds ``rewards/chosen`` or ``rewards/rejected`` (mean ``beta * r`` over its
        rows) and ``logps/chosen`` or ``logps/rejected`` (mean ``pi``). A class absent from the
        batch has no rewards or logps entry, never a NaN. ``rewards/margins`` is there when both
        classes are.
    """
    check_kto_hyperparameters(beta, desirable_weight, undesirable_weight)
    _check_kto_inputs(policy_logps, reference_logps, labels, kl)
    kl = kl.reshape(())

    losses, rewards = _dispatch.kto_row_losses(
        policy_logps,
        reference_logps,
        labels,
        kl,
        beta,
        desirable_weight,
        undesirable_weight,
        implementation,
    )  # (B,) each
    # A batch of zero rows has no loss to average; return 0 rather than NaN.
    loss = losses.mean() if losses.numel() > 0 else losses.sum()

    num_chosen = labels.sum()
    num_rejected = labels.numel() - num_chosen
    metrics = {
        "kl": kl.detach().to(rewards.dtype),
        "count/chosen": num_chosen.float(),
        "count/rejected": num_rejected.float(),
    }
    policy = policy_logps.detach().to(rewards.dtype)
    if int(num_chosen) > 0:
        metrics["rewards/chosen"] = rewards[labels].mean()
        metrics["logps/chosen"] = policy[labels].mean()
    if int(num_rejected) > 0:
        metrics["rewards/rejected"] = rewards[~labels].mean()
        metrics["logps/rejected"] = policy[~labels].mean()
    if "rewards/chosen" in metrics and "rewards/rejected" in metrics:
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return loss, metrics


def check_kto_hyperparameters(
    beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> None:
    """Raise ValueError naming the first invalid KTO hyper-parameter."""
    for name, value in (
        ("KTO beta", beta),
        ("desirable_weight", desirable_weight),
        ("undesirable_weight", undesirable_weight),
    ):
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be finite and greater than 0, got {value}")


class KTOLoss(torch.nn.Module):
    """:func:`kto_loss` as a module whose hyper-parameters are checked at construction."""

    def __init__(
        self,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        *,
        implementation: str = "native",
    ):
        super().__init__()
        check_kto_hyperparameters(beta, desirable_weight, undesirable_weight)
        _dispatch.check_implementation(implementation)
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight
        self.implementation = implementation

    def forward(self, policy_logps, reference_logps, labels, kl):
        return kto_loss(
            policy_logps,
            reference_logps,
            labels,
            kl,
            self.beta,
            self.desirable_weight,
            self.undesirable_weight,
            implementation=self.implementation,
        )


def _check_kto_inputs(policy_logps, reference_logps, labels, kl) -> None:
    if policy_logps.dim() != 1:
        raise ValueError(f"policy_logps must have shape (B,), got {tuple(policy_logps.shape)}")
    shape = tuple(policy_logps.shape)
    if tuple(reference_logps.shape) != shape:
        raise ValueError(
            f"reference_logps must have shape (B,) = {shape} like policy_logps, "
            f"got {tuple(reference_logps.shape)}"
        )
    if tuple(labels.shape) != shape:
        raise ValueError(
            f"labels must have shape (B,) = {shape} like policy_logps, got {tuple(labels.shape)}"
        )
    if labels.dtype != torch.bool:
        raise TypeError(f"labels must be bool (True for desirable), got {labels.dtype}")
    if not isinstance(kl, torch.Tensor) or kl.numel() != 1:
        raise ValueError("kl must be a tensor with one element; compute it with kto_kl")
