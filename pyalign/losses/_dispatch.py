"""Route each loss to its C++ op or to the op's plain-PyTorch twin.

``implementation="native"`` calls the ops registered by ``csrc/losses.cpp``, which are compiled
on first use (see ``pyalign.ops._build``). ``implementation="torch"`` calls the twins in
``pyalign.ops.reference`` and logs that choice once per process. Both return the same tensors,
so the reductions and metrics in ``pyalign.losses`` are shared.
"""

from __future__ import annotations

import logging

import torch

from pyalign import ops
from pyalign.ops import losses as loss_ops
from pyalign.ops import reference

logger = logging.getLogger(__name__)

_torch_selection_logged = False


def check_implementation(implementation: str) -> None:
    if implementation not in ops.IMPLEMENTATIONS:
        allowed = ", ".join(repr(name) for name in ops.IMPLEMENTATIONS)
        raise ValueError(f"implementation must be one of {allowed}, got {implementation!r}")


def _select(implementation: str, device: torch.device):
    """Return the module whose functions compute the losses: the op wrappers or the twins."""
    global _torch_selection_logged
    check_implementation(implementation)
    if implementation == "torch":
        if not _torch_selection_logged:
            logger.info("pyalign.losses: the plain-PyTorch loss implementation was selected")
            _torch_selection_logged = True
        return reference

    library = ops.load_library()
    if device.type not in library.device_types:
        raise NotImplementedError(
            f"the native ops have kernels for {', '.join(library.device_types)} only, but the "
            f"log-probabilities are on {device}; use implementation='torch' on this device"
        )
    return loss_ops


def dpo_pair_losses(
    policy, reference_logps, loss_type, beta, label_smoothing, gamma, implementation
):
    module = _select(implementation, policy.chosen.device)
    reference_chosen = reference_rejected = None
    if reference_logps is not None:
        reference_chosen, reference_rejected = reference_logps.chosen, reference_logps.rejected
    return module.dpo_pair_losses(
        policy.chosen,
        policy.rejected,
        reference_chosen,
        reference_rejected,
        policy.chosen_tokens,
        policy.rejected_tokens,
        loss_type,
        float(beta),
        float(label_smoothing),
        float(gamma),
    )


def kto_row_losses(
    policy_logps,
    reference_logps,
    labels,
    kl,
    beta,
    desirable_weight,
    undesirable_weight,
    implementation,
):
    module = _select(implementation, policy_logps.device)
    return module.kto_row_losses(
        policy_logps,
        reference_logps,
        labels,
        kl,
        float(beta),
        float(desirable_weight),
        float(undesirable_weight),
    )


def orpo_pair_losses(policy, beta, implementation):
    module = _select(implementation, policy.chosen.device)
    return module.orpo_pair_losses(
        policy.chosen, policy.rejected, policy.chosen_tokens, policy.rejected_tokens, float(beta)
    )


def grpo_token_losses(
    logps,
    old_logps,
    ref_logps,
    advantages,
    completion_mask,
    beta,
    epsilon_low,
    epsilon_high,
    implementation,
):
    module = _select(implementation, logps.device)
    return module.grpo_token_losses(
        logps,
        old_logps,
        ref_logps,
        advantages,
        completion_mask,
        float(beta),
        float(epsilon_low),
        float(epsilon_high),
    )
