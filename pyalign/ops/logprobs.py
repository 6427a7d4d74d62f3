"""Fake kernels and autograd for ``pyalign::fused_linear_logprobs``.

The op and its backward are defined in ``csrc/logprobs.cpp`` with CPU kernels in
``csrc/cpu/logprobs_cpu.cpp``. This module adds what the dispatcher needs from Python: fake
kernels, so that ``torch.compile`` and meta tensors see the output shapes and dtypes, and an
autograd formula that calls the backward op. ``pyalign.ops._build.load_library`` calls
:func:`register_python_kernels` right after loading the library.

Only ``token_logps`` is differentiable. ``logsumexp`` is returned for the backward pass and
for metrics, and is marked non-differentiable. The backward op has no autograd formula, so
double backward raises.
"""

from __future__ import annotations

import threading

import torch

FORWARD_OP = "pyalign::fused_linear_logprobs"
BACKWARD_OP = "pyalign::fused_linear_logprobs_backward"

_registration_lock = threading.Lock()
_registered = False


def accumulate_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """Return the dtype the op accumulates in and returns: float64 if an input is, else float32."""
    if torch.float64 in (hidden.dtype, weight.dtype):
        return torch.float64
    return torch.float32


def fused_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute ``log_softmax(hidden @ weight.T + bias)[i, targets[i]]`` chunk by chunk.

    Args:
        hidden: hidden states. Shape: (N, H), float16, bfloat16, float32 or float64.
        weight: LM head weight. Shape: (V, H), any of the same dtypes.
        bias: LM head bias or None. Shape: (V,).
        targets: token id to score for each row. Shape: (N,), int64, values in [0, V).
        chunk_size: rows of logits computed at once; extra memory is about chunk_size x V
            float32 (float64 for float64 inputs) values.

    Returns:
        ``(token_logps, logsumexp)``, both of shape (N,) in float32, or float64 when hidden
        or weight is float64.

    The native library must be loaded first (``pyalign.ops.load_native_ops()``).
    """
    return torch.ops.pyalign.fused_linear_logprobs(hidden, weight, bias, targets, chunk_size)


def _forward_fake(hidden, weight, bias, targets, chunk_size):
    # Argument checks happen in the C++ kernel; this only describes the outputs.
    dtype = accumulate_dtype(hidden, weight)
    token_logps = hidden.new_empty((hidden.shape[0],), dtype=dtype)
    logsumexp = hidden.new_empty((hidden.shape[0],), dtype=dtype)
    return token_logps, logsumexp


def _backward_fake(
    grad_token_logps, hidden, weight, bias, targets, logsumexp, chunk_size, needs_weight_grad
):
    grad_hidden = hidden.new_empty(hidden.shape)
    grad_weight = weight.new_empty(weight.shape) if needs_weight_grad else None
    grad_bias = None
    if needs_weight_grad and bias is not None:
        grad_bias = bias.new_empty(bias.shape)
    return grad_hidden, grad_weight, grad_bias


def _setup_context(ctx, inputs, output):
    hidden, weight, bias, targets, chunk_size = inputs
    _, logsumexp = output
    ctx.save_for_backward(hidden, weight, bias, targets, logsumexp)
    ctx.chunk_size = chunk_size
    ctx.mark_non_differentiable(logsumexp)


def _backward(ctx, grad_token_logps, grad_logsumexp):
    hidden, weight, bias, targets, logsumexp = ctx.saved_tensors
    needs_hidden_grad, needs_weight_grad, needs_bias_grad = ctx.needs_input_grad[:3]

    # The backward op has one switch for the whole LM head. A trainable bias on a frozen weight
    # therefore also computes the weight gradient, which is dropped below.
    # NOTE: grad_hidden is always computed, even when hidden does not require grad.
    grad_hidden, grad_weight, grad_bias = torch.ops.pyalign.fused_linear_logprobs_backward(
        grad_token_logps,
        hidden,
        weight,
        bias,
        targets,
        logsumexp,
        ctx.chunk_size,
        needs_weight_grad or needs_bias_grad,
    )
    return (
        grad_hidden if needs_hidden_grad else None,
        grad_weight if needs_weight_grad else None,
        grad_bias if needs_bias_grad else None,
        None,
        None,
    )


def register_python_kernels() -> None:
    """Register the fake kernels and the autograd formula; safe to call more than once."""
    global _registered
    with _registration_lock:
        if _registered:
            return
        torch.library.register_fake(FORWARD_OP, _forward_fake)
        torch.library.register_fake(BACKWARD_OP, _backward_fake)
        torch.library.register_autograd(FORWARD_OP, _backward, setup_context=_setup_context)
        _registered = True
