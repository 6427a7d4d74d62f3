"""Direct Preference Optimization and its pairwise variants.

Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model"
(2023), https://arxiv.org/abs/2305.18290. For P pairs with policy log-probabilities ``pi_c``,
``pi_r`` and reference log-probabilities ``ref_c``, ``ref_r`` of the chosen and rejected
responses (each a sum over response tokens, with ``n_c`` and ``n_r`` tokens), the implicit
rewards and their margin are

    r_c = beta * (pi_c - ref_c)      r_r = beta * (pi_r - ref_r)      z = r_c - r_r

and ``loss_type`` selects the per-pair loss, with label smoothing ``eps``:

- ``sigmoid``: ``-(1 - eps) log sigmoid(z) - eps log sigmoid(-z)``. With ``eps = 0`` this is DPO;
  with ``eps > 0`` it is conservative DPO, the form TRL's CPOTrainer uses for label smoothing.
- ``robust``: ``(-(1 - eps) log sigmoid(z) + eps log sigmoid(-z)) / (1 - 2 eps)``, the unbiased
  loss under label noise of rate eps (Chowdhury et al., "Provably Robust DPO", 2024).
- ``hinge``: ``relu(1 - z)`` (the SLiC hinge loss, Zhao et al. 2023).
- ``ipo``: ``(u - 1 / (2 beta))**2`` with the length-normalised log-ratio margin
  ``u = (pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r`` (Azar et al. 2023, eq. 17). The
  normalisation follows TRL 1.16's DPOTrainer, which divides by the completion length.
- ``simpo``: reference-free, on average log-probabilities ``a = pi / n``:
  ``z = beta * (a_c - a_r) - gamma`` in the sigmoid form above (Meng et al., "SimPO", 2024).
  Rewards are ``beta * a``.
- ``cpo``: reference-free, ``z = beta * (pi_c - pi_r)`` in the sigmoid form (Xu et al.,
  "Contrastive Preference Optimization", 2024), on summed log-probabilities as in TRL's
  CPOTrainer. Rewards are ``beta * pi``. CPO's behaviour-cloning term is ``rpo_alpha``.

``rpo_alpha`` adds ``alpha * nll`` with ``nll = -sum_p pi_c / sum_p n_c``, the chosen responses'
negative log-likelihood per token over the whole batch (Pang et al., "Iterative Reasoning
Preference Optimization", 2024).

Counts of zero tokens are treated as one, so an empty response contributes an average of 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyalign.losses import _dispatch
from pyalign.ops.reference import loss_dtype

__all__ = [
    "DPO_LOSS_TYPES",
    "REFERENCE_FREE_LOSS_TYPES",
    "DPOLoss",
    "PreferenceLogps",
    "dpo_loss",
]

DPO_LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge", "simpo", "cpo")
# Loss types that compare the policy's chosen and rejected responses without a reference model.
REFERENCE_FREE_LOSS_TYPES = ("simpo", "cpo")
# Loss types that read token counts, because they use average log-probabilities.
LENGTH_NORMALISED_LOSS_TYPES = ("ipo", "simpo")
# The loss types with a label smoothing term.
SMOOTHED_LOSS_TYPES = ("sigmoid", "robust", "simpo", "cpo")

DEFAULT_SIMPO_GAMMA = 0.5


@dataclass
class PreferenceLogps:
    """Per-pair sequence log-probabilities of the chosen and rejected responses.

    ``chosen`` and ``rejected`` are sums over response tokens, shape (P,). ``chosen_tokens`` and
    ``rejected_tokens`` are the token counts behind those sums, shape (P,), integer or floating
    point. Losses that need averages or a per-token NLL raise when the counts are None.
    """

    chosen: torch.Tensor  # (P,)
    rejected: torch.Tensor  # (P,)
    chosen_tokens: torch.Tensor | None = None  # (P,)
    rejected_tokens: torch.Tensor | None = None  # (P,)

    @classmethod
    def from_concatenated(
        cls, logps: torch.Tensor, tokens: torch.Tensor | None = None
    ) -> "PreferenceLogps":
        """Split (2P,) sums, and optionally (2P,) token counts, laid out chosen first."""
        num_pairs = logps.shape[0] // 2
        chosen_tokens = rejected_tokens = None
        if tokens is not None:
            chosen_tokens, rejected_tokens = tokens[:num_pairs], tokens[num_pairs:]
        return cls(
            chosen=logps[:num_pairs],
            rejected=logps[num_pairs:],
            chosen_tokens=chosen_tokens,
            rejected_tokens=rejected_tokens,
        )

    def chosen_mean(self) -> torch.Tensor:
        """Return the average log-probability per chosen token, 0 for an empty response."""
        return self.chosen / _require_tokens(self.chosen_tokens, "chosen").clamp(min=1)

    def rejected_mean(self) -> torch.Tensor:
        """Return the average log-probability per rejected token, 0 for an empty response."""
        return self.rejected / _require_tokens(self.rejected_tokens, "rejected").clamp(min=1)


def dpo_loss(
    policy: PreferenceLogps,
    reference: PreferenceLogps | None,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    simpo_gamma: float | None = DEFAULT_SIMPO_GAMMA,
    rpo_alpha: float | None = None,
    *,
    implementation: str = "native",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Compute a DPO-family loss and its metrics for one batch of P pairs.

    Args:
        policy: the policy's summed log-probabilities, shape (P,) each. ``ipo`` and ``simpo``
            need its token counts, and so does ``rpo_alpha``.
        reference: the reference model's, shape (P,) each; must be None for ``simpo`` and
            ``cpo`` and set for every other loss type.
        beta: the inverse temperature (for ``ipo``, the regularisation strength tau).
        loss_type: one of :data:`DPO_LOSS_TYPES`, described in the module docstring.
        label_smoothing: eps in [0, 0.5), for ``sigmoid``, ``robust``, ``simpo`` and ``cpo``.
        simpo_gamma: the SimPO target margin gamma; None means 0.5, TRL's default.
        rpo_alpha: weight of the chosen responses' per-token NLL, or None for none.
        implementation: "native" for the C++ op ``pyalign::dpo_loss``, "torch" for its
            plain-PyTorch twin.

    Returns:
        The mean loss over pairs plus ``rpo_alpha * nll`` (a scalar with gradient), and detached
        scalar metrics: ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins`` (means of
        r_c, r_r and r_c - r_r), ``rewards/accuracies`` (share of pairs with r_c > r_r: a tie
        counts as not correct), ``logps/chosen`` and ``logps/rejected`` (means of the
        log-probabilities the rewards are built from: averages for ``simpo``, sums otherwise),
        and ``nll_loss`` when ``rpo_alpha`` is set.
    """
    gamma = DEFAULT_SIMPO_GAMMA if simpo_gamma is None else simpo_gamma
    check_dpo_hyperparameters(beta, loss_type, label_smoothing, gamma, rpo_alpha)
    _check_dpo_inputs(policy, reference, loss_type, rpo_alpha)

    losses, chosen_rewards, rejected_rewards = _dispatch.dpo_pair_losses(
        policy, reference, loss_type, beta, label_smoothing, gamma, implementation
    )  # (P,) each
    loss = losses.mean()

    if loss_type == "simpo":
        chosen_logps, rejected_logps = policy.chosen_mean(), policy.rejected_mean()
    else:
        chosen_logps, rejected_logps = policy.chosen, policy.rejected
    margins = chosen_rewards - rejected_rewards
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "rewards/margins": margins.mean(),
        "logps/chosen": _upcast(chosen_logps.detach()).mean(),
        "logps/rejected": _upcast(rejected_logps.detach()).mean(),
    }

    if rpo_alpha is not None:
        nll = chosen_nll(policy)
        loss = loss + rpo_alpha * nll
        metrics["nll_loss"] = nll.detach()
    return loss, metrics


def chosen_nll(policy: PreferenceLogps) -> torch.Tensor:
    """Return the chosen responses' negative log-likelihood per token over the batch.

    Tokens of all pairs count alike (a token-level mean, as TRL's ``sft`` DPO loss and ORPO take
    it), and a batch without chosen tokens gives 0.
    """
    tokens = _require_tokens(policy.chosen_tokens, "chosen")
    total_tokens = tokens.sum().clamp(min=1).to(policy.chosen.dtype)
    return -policy.chosen.sum() / total_tokens


def check_dpo_hyperparameters(
    beta: float,
    loss_type: str,
    label_smoothing: float = 0.0,
    simpo_gamma: float = DEFAULT_SIMPO_GAMMA,
    rpo_alpha: float | None = None,
) -> None:
    """Raise ValueError naming the first invalid DPO hyper-parameter."""
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected one of {DPO_LOSS_TYPES}")
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"DPO beta must be finite and greater than 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing > 0 and loss_type not in SMOOTHED_LOSS_TYPES:
        raise ValueError(
            f"label_smoothing must be 0 for loss_type {loss_type!r}, got {label_smoothing}; it "
            f"applies to {', '.join(SMOOTHED_LOSS_TYPES)}"
        )
    if not (simpo_gamma >= 0 and math.isfinite(simpo_gamma)):
        raise ValueError(f"simpo_gamma must be finite and at least 0, got {simpo_gamma}")
    if rpo_alpha is not None and not (rpo_alpha >= 0 and math.isfinite(rpo_alpha)):
        raise ValueError(f"rpo_alpha must be finite and at least 0, or None, got {rpo_alpha}")


class DPOLoss(torch.nn.Module):
    """:func:`dpo_loss` as a module whose hyper-parameters are checked at construction."""

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        simpo_gamma: float | None = DEFAULT_SIMPO_GAMMA,
        rpo_alpha: float | None = None,
        *,
        implementation: str = "native",
    ):
        super().__init__()
        gamma = DEFAULT_SIMPO_GAMMA if simpo_gamma is None else simpo_gamma
        check_dpo_hyperparameters(beta, loss_type, label_smoothing, gamma, rpo_alpha)
        _dispatch.check_implementation(implementation)
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.simpo_gamma = gamma
        self.rpo_alpha = rpo_alpha
        self.implementation = implementation

    @property
    def needs_reference(self) -> bool:
        """Whether forward expects reference log-probabilities."""
        return self.loss_type not in REFERENCE_FREE_LOSS_TYPES

    def forward(self, policy: PreferenceLogps, reference: PreferenceLogps | None = None):
        return dpo_loss(
            policy,
            reference,
            self.beta,
            self.loss_type,
            self.label_smoothing,
            self.simpo_gamma,
            self.rpo_alpha,
            implementation=self.implementation,
        )


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Return the tensor in the dtype the loss ops compute in (float32, or float64)."""
    return tensor.to(loss_dtype(tensor))


def _require_tokens(tokens: torch.Tensor | None, side: str) -> torch.Tensor:
    if tokens is None:
        raise ValueError(
            f"PreferenceLogps.{side}_tokens is None, but this loss needs token counts; pass the "
            "counts from SequenceLogprobs.count"
        )
    return tokens


def _check_dpo_inputs(policy, reference, loss_type, rpo_alpha) -> None:
    if policy.chosen.numel() == 0:
        raise ValueError("DPO needs at least one chosen/rejected pair, got an empty batch")
    if loss_type in REFERENCE_FREE_LOSS_TYPES:
        if reference is not None:
            raise ValueError(
                f"DPO loss_type {loss_type!r} is reference-free, so reference must be None"
            )
    elif reference is None:
        raise ValueError(f"DPO loss_type {loss_type!r} needs reference log-probabilities")

    if loss_type in LENGTH_NORMALISED_LOSS_TYPES or rpo_alpha is not None:
        _require_tokens(policy.chosen_tokens, "chosen")
        _require_tokens(policy.rejected_tokens, "rejected")

    shape = tuple(policy.chosen.shape)
    if len(shape) != 1:
        raise ValueError(f"PreferenceLogps.chosen must have shape (P,), got {shape}")
    tensors = {"policy.rejected": policy.rejected}
    if reference is not None:
        tensors["reference.chosen"] = reference.chosen
        tensors["reference.rejected"] = reference.rejected
    for name in ("chosen_tokens", "rejected_tokens"):
        if getattr(policy, name) is not None:
            tensors[f"policy.{name}"] = getattr(policy, name)
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have shape (P,) = {shape} like policy.chosen, "
                f"got {tuple(tensor.shape)}"
            )
