"""Group Relative Policy Optimization loss.

Shao et al., "DeepSeekMath" (2024), https://arxiv.org/abs/2402.03300, with the aggregations
TRL 1.16's GRPOTrainer offers. For completion b with per-token log-probabilities ``logp`` under
the policy, ``old`` under the policy that sampled it and ``ref`` under the reference, and the
sequence advantage ``A_b``, each completion token t has

    c   = exp(logp - old)                                  (the importance ratio)
    c'  = clamp(c, 1 - epsilon, 1 + epsilon_high)
    k3  = exp(ref - logp) - (ref - logp) - 1               (the KL estimator, Schulman 2020)
    l   = -min(c A_b, c' A_b) + beta * k3

``old = None`` means ``old = logp.detach()`` (a single update per generation, so c = 1), and
the exponent of k3 is capped at 20 so that it cannot overflow. ``loss_type`` picks how the
token losses l, with the completion mask m (B, T), become one number:

- ``grpo``: ``mean_b( sum_t m l / max(1, sum_t m) )``, a mean per sequence, then over sequences;
- ``bnpo``: ``sum m l / max(1, sum m)``, a mean over the batch's tokens;
- ``dr_grpo``: ``sum m l / (B * max_completion_length)`` (Liu et al., "Understanding
  R1-Zero-Like Training", 2025);
- ``dapo``: ``sum m l / num_items_in_batch``, the token count of the whole generation batch
  (Yu et al., "DAPO", 2025). TRL passes that count in. It defaults here to ``sum m`` of this
  batch, so ``dapo`` equals ``bnpo`` for a batch that is a whole generation batch.

TRL divides ``grpo``, ``bnpo`` and ``dr_grpo`` by the gradient accumulation steps during
training; that scaling belongs to the trainer and is not applied here.
"""

from __future__ import annotations

import math

import torch

from pyalign.losses import _dispatch

__all__ = ["GRPO_LOSS_TYPES", "GRPOLoss", "check_grpo_hyperparameters", "grpo_loss"]

GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    beta: float,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    *,
    num_items_in_batch: int | torch.Tensor | None = None,
    implementation: str = "native",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Compute the GRPO loss and its metrics for B completions of up to T tokens.

    Args:
        logps: the policy's per-token log-probabilities of the completion tokens. Shape: (B, T).
        old_logps: the sampling policy's, or None (see the module docstring). Shape: (B, T).
        ref_logps: the reference's; needed when beta > 0. Shape: (B, T).
        advantages: one advantage per completion. Shape: (B,).
        completion_mask: True on the completion tokens that count. Shape: (B, T) bool.
        beta: weight of the KL term; 0 turns it off.
        epsilon: the lower clip range, and the upper one when ``epsilon_high`` is None.
        epsilon_high: the upper clip range (DAPO's clip-higher), or None.
        loss_type: one of :data:`GRPO_LOSS_TYPES`.
        max_completion_length: the ``dr_grpo`` normaliser; None means T.
        num_items_in_batch: the ``dapo`` normaliser; None means ``completion_mask.sum()``.
        implementation: "native" for the C++ op ``pyalign::grpo_loss``, "torch" for its twin.

    Returns:
        The loss (a scalar with gradient) and detached scalar metrics named as TRL logs them:
        ``clip_ratio/low_mean``, ``clip_ratio/high_mean`` and ``clip_ratio/region_mean`` (shares
        of masked tokens with ``c < 1 - epsilon`` and A < 0, with ``c > 1 + epsilon_high`` and
        A > 0, and with either), ``clip_ratio/low_min`` and ``clip_ratio/high_max`` (the
        smallest and largest share per completion, over completions with at least one token;
        absent when there is none), and ``kl`` (the masked mean of k3) when beta > 0. Masked
        means over zero tokens are 0.
    """
    epsilon_low = epsilon
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    check_grpo_hyperparameters(beta, epsilon_low, epsilon_high, loss_type, max_completion_length)
    _check_grpo_inputs(logps, old_logps, ref_logps, advantages, completion_mask, beta)

    token_losses, token_kl, low_clipped, high_clipped = _dispatch.grpo_token_losses(
        logps,
        old_logps,
        ref_logps,
        advantages,
        completion_mask,
        beta,
        epsilon_low,
        epsilon_high,
        implementation,
    )  # (B, T) each, 0 outside the mask
    loss = _aggregate(
        token_losses, completion_mask, loss_type, max_completion_length, num_items_in_batch
    )

    mask = completion_mask.float()  # (B, T)
    total_tokens = mask.sum().clamp(min=1)
    region_clipped = low_clipped | high_clipped
    metrics = {
        "clip_ratio/low_mean": low_clipped.float().sum() / total_tokens,
        "clip_ratio/high_mean": high_clipped.float().sum() / total_tokens,
        "clip_ratio/region_mean": region_clipped.float().sum() / total_tokens,
    }
    sequence_tokens = mask.sum(dim=1)  # (B,)
    has_tokens = sequence_tokens > 0
    if bool(has_tokens.any()):
        low_share = low_clipped.float().sum(dim=1)[has_tokens] / sequence_tokens[has_tokens]
        high_share = high_clipped.float().sum(dim=1)[has_tokens] / sequence_tokens[has_tokens]
        metrics["clip_ratio/low_min"] = low_share.min()
        metrics["clip_ratio/high_max"] = high_share.max()
    if beta > 0:
        metrics["kl"] = token_kl.float().sum() / total_tokens
    return loss, metrics


def _aggregate(token_losses, completion_mask, loss_type, max_completion_length, num_items):
    # token_losses is already 0 outside the mask. An empty batch has loss 0, as a batch with
    # every token masked does.
    if token_losses.numel() == 0:
        return token_losses.sum()
    if loss_type == "grpo":
        tokens = completion_mask.sum(dim=1).clamp(min=1)  # (B,)
        return (token_losses.sum(dim=1) / tokens).mean()
    if loss_type == "bnpo":
        return token_losses.sum() / completion_mask.sum().clamp(min=1)
    if loss_type == "dr_grpo":
        length = token_losses.shape[1] if max_completion_length is None else max_completion_length
        return token_losses.sum() / (token_losses.shape[0] * length)
    # dapo
    if num_items is None:
        num_items = completion_mask.sum()
    if not isinstance(num_items, torch.Tensor):
        num_items = torch.tensor(num_items)
    return token_losses.sum() / num_items.to(token_losses.device, token_losses.dtype).clamp(min=1)


def check_grpo_hyperparameters(
    beta: float,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
) -> None:
    """Raise ValueError naming the first invalid GRPO hyper-parameter."""
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"unknown GRPO loss_type {loss_type!r}; expected one of {GRPO_LOSS_TYPES}")
    if not (beta >= 0 and math.isfinite(beta)):
        raise ValueError(f"GRPO beta must be finite and at least 0, got {beta}")
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    if epsilon_high is not None and not (epsilon_high > 0 and math.isfinite(epsilon_high)):
        raise ValueError(
            f"epsilon_high must be finite and greater than 0, or None, got {epsilon_high}"
        )
    if max_completion_length is not None and (
        isinstance(max_completion_length, bool)
        or not isinstance(max_completion_length, int)
        or max_completion_length < 1
    ):
        raise ValueError(
            f"max_completion_length must be a positive int or None, got {max_completion_length!r}"
        )


class GRPOLoss(torch.nn.Module):
    """:func:`grpo_loss` as a module whose hyper-parameters are checked at construction."""

    def __init__(
        self,
        beta: float = 0.0,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        loss_type: str = "grpo",
        max_completion_length: int | None = None,
        *,
        implementation: str = "native",
    ):
        super().__init__()
        check_grpo_hyperparameters(beta, epsilon, epsilon_high, loss_type, max_completion_length)
        _dispatch.check_implementation(implementation)
        self.beta = beta
        self.epsilon = epsilon
        self.epsilon_high = epsilon_high
        self.loss_type = loss_type
        self.max_completion_length = max_completion_length
        self.implementation = implementation

    def forward(
        self, logps, old_logps, ref_logps, advantages, completion_mask, num_items_in_batch=None
    ):
        return grpo_loss(
            logps,
            old_logps,
            ref_logps,
            advantages,
            completion_mask,
            self.beta,
            self.epsilon,
            self.epsilon_high,
            self.loss_type,
            self.max_completion_length,
            num_items_in_batch=num_items_in_batch,
            implementation=self.implementation,
        )


def _check_grpo_inputs(logps, old_logps, ref_logps, advantages, completion_mask, beta) -> None:
    if logps.dim() != 2:
        raise ValueError(f"logps must have shape (B, T), got {tuple(logps.shape)}")
    shape = tuple(logps.shape)
    for name, tensor in (
        ("old_logps", old_logps),
        ("ref_logps", ref_logps),
        ("completion_mask", completion_mask),
    ):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have shape (B, T) = {shape} like logps, got {tuple(tensor.shape)}"
            )
    if completion_mask.dtype != torch.bool:
        raise TypeError(f"completion_mask must be bool, got {completion_mask.dtype}")
    if tuple(advantages.shape) != shape[:1]:
        raise ValueError(
            f"advantages must have shape (B,) = {shape[:1]}, got {tuple(advantages.shape)}"
        )
    if beta > 0 and ref_logps is None:
        raise ValueError(f"ref_logps is needed for the KL term when beta > 0 (beta = {beta})")
