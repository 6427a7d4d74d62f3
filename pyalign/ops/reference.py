"""Plain-PyTorch twins of the C++ ops, for tests and for ``implementation="torch"``.

Each twin computes what its op computes in the most direct way, with autograd doing the
backward pass. The log-probability twin materialises the full (N, V) logits in float32, so it
needs N x V x 4 bytes where the fused op needs chunk_size x V x 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def fused_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compute ``log_softmax(hidden @ weight.T + bias)[i, targets[i]]`` with full logits.

    Twin of ``pyalign::fused_linear_logprobs``: same arguments except ``chunk_size``, same
    ``(token_logps, logsumexp, entropy)`` outputs of shape (N,) (``entropy`` (0,) unless
    requested), in float32 or, when hidden or weight is float64, in float64.
    """
    if targets.numel() > 0:
        vocab_size = weight.shape[0]
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"targets must be token ids in [0, {vocab_size}), got values from {low} to {high}"
            )

    acc_dtype = torch.float64 if torch.float64 in (hidden.dtype, weight.dtype) else torch.float32
    acc_bias = None if bias is None else bias.to(acc_dtype)
    logits = F.linear(hidden.to(acc_dtype), weight.to(acc_dtype), acc_bias)  # (N, V)
    logsumexp = torch.logsumexp(logits, dim=-1)  # (N,)
    target_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N,)
    if compute_entropy:
        with torch.no_grad():
            log_probs = logits - logsumexp.unsqueeze(-1)  # (N, V)
            # A -inf logit (a masked token) has probability 0 and adds 0, not 0 * -inf.
            terms = torch.where(torch.isneginf(log_probs), 0, log_probs.exp() * log_probs)
            entropy = -terms.sum(dim=-1)  # (N,)
    else:
        entropy = logits.new_zeros((0,))
    return target_logits - logsumexp, logsumexp.detach(), entropy


# Preference losses. Each twin returns what its op in csrc/losses.cpp returns, computed in
# float32, or float64 when a floating-point input is float64.

# exp(ref - logp) in the GRPO KL estimator is evaluated at min(ref - logp, this), so that a token
# the policy has all but ruled out cannot overflow float32 (exp(88.7) does).
GRPO_KL_MAX_EXPONENT = 20.0

# ORPO's log odds log(p / (1 - p)) are infinite at p = 1, so average log-probabilities are
# clamped to at most this value, where the log odds are about 13.8.
ORPO_MAX_AVERAGE_LOGP = -1e-6


def _at_most(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``min(x, bound)`` whose gradient passes at the bound, as the C++ ops' clamps do.

    At the bound itself, torch 2.15's clamp gives a gradient of 0 for a number bound and half
    the gradient for a tensor bound, which is not documented, so the twins spell it out.
    """
    return torch.where(x > bound, bound, x)


def _at_least(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``max(x, bound)`` whose gradient passes at the bound; see :func:`_at_most`."""
    return torch.where(x < bound, bound, x)


def loss_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """Return the dtype the loss ops compute in: float64 if a float input is, else float32."""
    for tensor in tensors:
        if tensor is not None and tensor.dtype == torch.float64:
            return torch.float64
    return torch.float32


def _smoothed_sigmoid_loss(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def dpo_pair_losses(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    reference_chosen: torch.Tensor | None,
    reference_rejected: torch.Tensor | None,
    chosen_tokens: torch.Tensor | None,
    rejected_tokens: torch.Tensor | None,
    loss_type: str,
    beta: float,
    label_smoothing: float,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compute per-pair DPO-family losses and rewards; twin of ``pyalign::dpo_loss``.

    The formulas are in ``pyalign.losses.dpo``. Returns ``(losses, chosen_rewards,
    rejected_rewards)``, each of shape (P,); the rewards carry no gradient.
    """
    dtype = loss_dtype(chosen, rejected, reference_chosen, reference_rejected)
    policy_chosen, policy_rejected = chosen.to(dtype), rejected.to(dtype)  # (P,)

    if loss_type in ("simpo", "cpo"):
        chosen_scores, rejected_scores = policy_chosen, policy_rejected
    else:
        chosen_scores = policy_chosen - reference_chosen.to(dtype)
        rejected_scores = policy_rejected - reference_rejected.to(dtype)
    if loss_type in ("ipo", "simpo"):
        chosen_scores = chosen_scores / chosen_tokens.to(dtype).clamp(min=1)
        rejected_scores = rejected_scores / rejected_tokens.to(dtype).clamp(min=1)

    margin = beta * (chosen_scores - rejected_scores)
    if loss_type in ("sigmoid", "cpo"):
        losses = _smoothed_sigmoid_loss(margin, label_smoothing)
    elif loss_type == "simpo":
        losses = _smoothed_sigmoid_loss(margin - gamma, label_smoothing)
    elif loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(margin)
        flipped = -label_smoothing * F.logsigmoid(-margin)
        losses = (clean - flipped) / (1 - 2 * label_smoothing)
    elif loss_type == "hinge":
        losses = torch.relu(1 - margin)
    elif loss_type == "ipo":
        losses = (chosen_scores - rejected_scores - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}")

    # The rewards of the IPO pairs use the summed log-ratios, as TRL's DPOTrainer logs them.
    if loss_type == "ipo":
        chosen_scores = policy_chosen - reference_chosen.to(dtype)
        rejected_scores = policy_rejected - reference_rejected.to(dtype)
    return losses, beta * chosen_scores.detach(), beta * rejected_scores.detach()


def kto_row_losses(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    labels: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float,
    undesirable_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute weighted per-row KTO losses and rewards; twin of ``pyalign::kto_loss``.

    Returns ``(losses, rewards)`` of shape (B,): ``losses`` is ``w_D (1 - sigmoid(beta (r - kl)))``
    on desirable rows and ``w_U (1 - sigmoid(beta (kl - r)))`` on undesirable ones, with the
    log-ratio ``r = policy - reference``; ``rewards`` is ``beta * r`` without gradient.
    """
    dtype = loss_dtype(policy_logps, reference_logps, kl)
    logratios = policy_logps.to(dtype) - reference_logps.to(dtype)  # (B,)
    kl = kl.to(dtype)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios)))
    losses = torch.where(labels, desirable, undesirable)
    return losses, beta * logratios.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    # log(1 - exp(x)) for x < 0: log1p(-exp(x)) loses accuracy near 0 and log(-expm1(x)) far
    # from it, so the switch is at -log 2 (Maechler, "Accurately Computing log(1 - exp(-|a|))").
    # Each branch gets an argument clamped to its own range, so neither yields inf in the
    # backward pass.
    switch = -math.log(2)
    far = torch.log1p(-torch.exp(_at_most(x, switch)))
    near = torch.log(-torch.expm1(_at_least(x, switch)))
    return torch.where(x < switch, far, near)


def orpo_pair_losses(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute per-pair ORPO odds-ratio losses; twin of ``pyalign::orpo_loss``.

    Returns ``(losses, log_odds)`` of shape (P,): the log odds ratio
    ``L = log(p_c / (1 - p_c)) - log(p_r / (1 - p_r))`` of the average per-token probabilities
    ``p = exp(logps / tokens)``, and ``losses = -beta * log sigmoid(L)``. ``log_odds`` carries no
    gradient.
    """
    dtype = loss_dtype(chosen, rejected)
    chosen_mean = chosen.to(dtype) / chosen_tokens.to(dtype).clamp(min=1)  # (P,)
    rejected_mean = rejected.to(dtype) / rejected_tokens.to(dtype).clamp(min=1)  # (P,)
    chosen_mean = _at_most(chosen_mean, ORPO_MAX_AVERAGE_LOGP)
    rejected_mean = _at_most(rejected_mean, ORPO_MAX_AVERAGE_LOGP)

    log_odds = (chosen_mean - rejected_mean) - (_log1mexp(chosen_mean) - _log1mexp(rejected_mean))
    losses = -beta * F.logsigmoid(log_odds)
    return losses, log_odds.detach()


def grpo_token_losses(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    beta: float,
    epsilon_low: float,
    epsilon_high: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compute per-token GRPO losses; twin of ``pyalign::grpo_loss``.

    With the ratio ``c = exp(logps - old_logps)`` (1 with gradient 1 when ``old_logps`` is
    None), its clip ``c' = clamp(c, 1 - epsilon_low, 1 + epsilon_high)`` and the KL estimator
    ``k3 = exp(d) - d - 1`` with ``d = ref_logps - logps`` (0 when ``ref_logps`` is None),
    returns, each of shape (B, T) and 0 outside the completion mask:

    - ``losses``: ``-min(c A, c' A) + beta * k3``,
    - ``kl``: ``k3``, without gradient,
    - ``low_clipped``: ``c < 1 - epsilon_low`` where A < 0 (bool),
    - ``high_clipped``: ``c > 1 + epsilon_high`` where A > 0 (bool).
    """
    dtype = loss_dtype(logps, old_logps, ref_logps, advantages)
    mask = completion_mask
    # Masked positions may hold anything (padding); zero them before exp so that neither the
    # values nor the gradients there can be inf or NaN.
    policy = torch.where(mask, logps.to(dtype), 0)  # (B, T)
    if old_logps is None:
        old = policy.detach()
    else:
        old = torch.where(mask, old_logps.to(dtype), 0)  # (B, T)
    gains = advantages.to(dtype).unsqueeze(1)  # (B, 1)

    lower, upper = 1 - epsilon_low, 1 + epsilon_high
    log_ratio = policy - old
    with torch.no_grad():
        ratio = torch.exp(log_ratio)  # (B, T), inf where log_ratio > 88.7 in float32
        binds = ((gains > 0) & (ratio > upper)) | ((gains < 0) & (ratio < lower))
    # Where the clip binds, the loss is -c' A with c' a constant bound and no gradient reaches c.
    # There c is taken as 1, because an infinite ratio would turn that 0 gradient into NaN.
    free_ratio = torch.exp(torch.where(binds, 0, log_ratio))  # (B, T)
    clipped_ratio = _at_least(_at_most(free_ratio, upper), lower)
    free_losses = -torch.min(free_ratio * gains, clipped_ratio * gains)
    bound = torch.where(gains > 0, gains.new_tensor(upper), gains.new_tensor(lower))  # (B, 1)
    losses = torch.where(binds, -bound * gains, free_losses)

    if ref_logps is not None:
        reference = torch.where(mask, ref_logps.to(dtype), 0)
        log_ratio = reference - policy
        kl = torch.exp(_at_most(log_ratio, GRPO_KL_MAX_EXPONENT)) - log_ratio - 1
        losses = losses + beta * kl
    else:
        kl = torch.zeros_like(policy)

    zero = torch.zeros((), dtype=dtype)
    losses = torch.where(mask, losses, zero)
    low_clipped = (ratio < 1 - epsilon_low) & (gains < 0) & mask
    high_clipped = (ratio > 1 + epsilon_high) & (gains > 0) & mask
    return losses, torch.where(mask, kl, zero).detach(), low_clipped, high_clipped
