"""Wrappers, fake kernels and autograd of the preference-loss ops.

The ops and their backward ops are defined in ``csrc/losses.cpp``, with CPU kernels in
``csrc/cpu/losses_cpu.cpp`` and CUDA kernels in ``csrc/cuda/losses_cuda.cu``. Each returns
per-pair, per-row or per-token values in float32 (float64 when a floating-point input is
float64); the reductions and metrics are in ``pyalign.losses``. Only ``losses`` is
differentiable: the rewards, log odds, KL values and clip flags are marked non-differentiable.
The backward ops' autograd formulas raise, so double backward does too.
``pyalign.ops._build.load_library`` calls :func:`register_python_kernels` after loading the
library.
"""

from __future__ import annotations

import threading

import torch

from pyalign.ops._checks import checking_devices, register_no_double_backward
from pyalign.ops.reference import loss_dtype

__all__ = [
    "dpo_pair_losses",
    "grpo_token_losses",
    "kto_row_losses",
    "orpo_pair_losses",
    "register_python_kernels",
]

_registration_lock = threading.Lock()
_registered = False


def dpo_pair_losses(
    chosen,
    rejected,
    reference_chosen,
    reference_rejected,
    chosen_tokens,
    rejected_tokens,
    loss_type,
    beta,
    label_smoothing,
    gamma,
):
    """Call ``pyalign::dpo_loss``; see ``pyalign.ops.reference.dpo_pair_losses``."""
    return torch.ops.pyalign.dpo_loss(
        chosen,
        rejected,
        reference_chosen,
        reference_rejected,
        chosen_tokens,
        rejected_tokens,
        loss_type,
        beta,
        label_smoothing,
        gamma,
    )


def kto_row_losses(
    policy_logps, reference_logps, labels, kl, beta, desirable_weight, undesirable_weight
):
    """Call ``pyalign::kto_loss``; see ``pyalign.ops.reference.kto_row_losses``."""
    return torch.ops.pyalign.kto_loss(
        policy_logps, reference_logps, labels, kl, beta, desirable_weight, undesirable_weight
    )


def orpo_pair_losses(chosen, rejected, chosen_tokens, rejected_tokens, beta):
    """Call ``pyalign::orpo_loss``; see ``pyalign.ops.reference.orpo_pair_losses``."""
    return torch.ops.pyalign.orpo_loss(chosen, rejected, chosen_tokens, rejected_tokens, beta)


def grpo_token_losses(
    logps, old_logps, ref_logps, advantages, completion_mask, beta, epsilon_low, epsilon_high
):
    """Call ``pyalign::grpo_loss``; see ``pyalign.ops.reference.grpo_token_losses``."""
    return torch.ops.pyalign.grpo_loss(
        logps, old_logps, ref_logps, advantages, completion_mask, beta, epsilon_low, epsilon_high
    )


# Fake kernels: output shapes and dtypes only. Argument checks happen in the C++ kernels.


def _vector_like(tensor, dtype):
    return tensor.new_empty(tensor.shape, dtype=dtype)


def _optional_like(tensor):
    return None if tensor is None else tensor.new_empty(tensor.shape)


def _dpo_fake(chosen, rejected, reference_chosen, reference_rejected, *_):
    dtype = loss_dtype(chosen, rejected, reference_chosen, reference_rejected)
    return tuple(_vector_like(chosen, dtype) for _ in range(3))


def _dpo_backward_fake(grad, chosen, rejected, reference_chosen, reference_rejected, *_):
    return (
        chosen.new_empty(chosen.shape),
        rejected.new_empty(rejected.shape),
        _optional_like(reference_chosen),
        _optional_like(reference_rejected),
    )


def _kto_fake(policy_logps, reference_logps, labels, kl, *_):
    dtype = loss_dtype(policy_logps, reference_logps, kl)
    return _vector_like(policy_logps, dtype), _vector_like(policy_logps, dtype)


def _kto_backward_fake(grad, policy_logps, reference_logps, labels, kl, *_):
    return (
        policy_logps.new_empty(policy_logps.shape),
        reference_logps.new_empty(reference_logps.shape),
        kl.new_empty(()),
    )


def _orpo_fake(chosen, rejected, *_):
    dtype = loss_dtype(chosen, rejected)
    return _vector_like(chosen, dtype), _vector_like(chosen, dtype)


def _orpo_backward_fake(grad, chosen, rejected, *_):
    return chosen.new_empty(chosen.shape), rejected.new_empty(rejected.shape)


def _grpo_fake(logps, old_logps, ref_logps, advantages, completion_mask, *_):
    dtype = loss_dtype(logps, old_logps, ref_logps, advantages)
    return (
        _vector_like(logps, dtype),
        _vector_like(logps, dtype),
        _vector_like(logps, torch.bool),
        _vector_like(logps, torch.bool),
    )


def _grpo_backward_fake(grad, logps, old_logps, ref_logps, advantages, *_):
    return (
        logps.new_empty(logps.shape),
        _optional_like(old_logps),
        _optional_like(ref_logps),
        advantages.new_empty(advantages.shape),
    )


# Autograd: save the inputs, mark the auxiliary outputs non-differentiable and call the
# backward op with the gradient of `losses`.


def _save_inputs(ctx, inputs, output, tensor_count):
    ctx.save_for_backward(*inputs[:tensor_count])
    ctx.hyperparameters = inputs[tensor_count:]
    ctx.mark_non_differentiable(*output[1:])


def _dpo_setup(ctx, inputs, output):
    _save_inputs(ctx, inputs, output, tensor_count=6)


def _dpo_backward(ctx, grad_losses, *_):
    grads = torch.ops.pyalign.dpo_loss_backward(
        grad_losses, *ctx.saved_tensors, *ctx.hyperparameters
    )
    return _keep_needed(ctx, grads, 10)


def _kto_setup(ctx, inputs, output):
    _save_inputs(ctx, inputs, output, tensor_count=4)


def _kto_backward(ctx, grad_losses, *_):
    policy, reference, labels, kl = ctx.saved_tensors
    grad_policy, grad_reference, grad_kl = torch.ops.pyalign.kto_loss_backward(
        grad_losses, policy, reference, labels, kl, *ctx.hyperparameters
    )
    return _keep_needed(ctx, (grad_policy, grad_reference, None, grad_kl), 7)


def _orpo_setup(ctx, inputs, output):
    _save_inputs(ctx, inputs, output, tensor_count=4)


def _orpo_backward(ctx, grad_losses, *_):
    grads = torch.ops.pyalign.orpo_loss_backward(
        grad_losses, *ctx.saved_tensors, *ctx.hyperparameters
    )
    return _keep_needed(ctx, grads, 5)


def _grpo_setup(ctx, inputs, output):
    _save_inputs(ctx, inputs, output, tensor_count=5)


def _grpo_backward(ctx, grad_losses, *_):
    logps, old_logps, ref_logps, advantages, mask = ctx.saved_tensors
    grad_logps, grad_old, grad_ref, grad_advantages = torch.ops.pyalign.grpo_loss_backward(
        grad_losses, logps, old_logps, ref_logps, advantages, mask, *ctx.hyperparameters
    )
    return _keep_needed(ctx, (grad_logps, grad_old, grad_ref, grad_advantages), 8)


def _keep_needed(ctx, grads, input_count):
    """Pad the gradients to one per op input, with None where no gradient is needed."""
    padded = list(grads) + [None] * (input_count - len(grads))
    return tuple(grad if needed else None for grad, needed in zip(padded, ctx.needs_input_grad))


_OPS = {
    "pyalign::dpo_loss": (_dpo_fake, _dpo_backward, _dpo_setup),
    "pyalign::kto_loss": (_kto_fake, _kto_backward, _kto_setup),
    "pyalign::orpo_loss": (_orpo_fake, _orpo_backward, _orpo_setup),
    "pyalign::grpo_loss": (_grpo_fake, _grpo_backward, _grpo_setup),
}
_BACKWARD_FAKES = {
    "pyalign::dpo_loss_backward": _dpo_backward_fake,
    "pyalign::kto_loss_backward": _kto_backward_fake,
    "pyalign::orpo_loss_backward": _orpo_backward_fake,
    "pyalign::grpo_loss_backward": _grpo_backward_fake,
}


def register_python_kernels() -> None:
    """Register the fake kernels and the autograd formulas; safe to call more than once."""
    global _registered
    with _registration_lock:
        if _registered:
            return
        for name, (fake, backward, setup) in _OPS.items():
            torch.library.register_fake(name, checking_devices(name, fake))
            torch.library.register_autograd(name, backward, setup_context=setup)
        for name, fake in _BACKWARD_FAKES.items():
            torch.library.register_fake(name, checking_devices(name, fake))
            register_no_double_backward(name)
        _registered = True
