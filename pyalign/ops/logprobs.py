"""Fake kernels and autograd for ``pyalign::fused_linear_logprobs``.

The op and its backward are defined in ``csrc/logprobs.cpp`` with CPU kernels in
``csrc/cpu/logprobs_cpu.cpp``. This module adds what the dispatcher needs from Python: fake
kernels, so that ``torch.compile`` and meta tensors see the output shapes and dtypes, and an
autograd formula that calls the backward op. ``pyalign.ops._build.load_library`` calls
:func:`register_python_kernels` right after loading the library.

Only ``token_logps`` is differentiable. ``logsumexp`` (kept for the backward pass), the entropy
(for logging) and the hidden Jacobian (kept for the backward pass of a frozen LM head) are
marked non-differentiable. The backward op's autograd formula raises, so double backward does
too, and with ``create_graph=True`` a frozen head's gradient comes from the backward op rather
than from the saved Jacobian, whose own dependence on the inputs is not tracked.
"""

from __future__ import annotations

import threading

import torch

from pyalign.ops._checks import checking_devices, register_no_double_backward

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
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compute ``log_softmax(hidden @ weight.T + bias)[i, targets[i]]`` chunk by chunk.

    Args:
        hidden: hidden states. Shape: (N, H), float16, bfloat16, float32 or float64.
        weight: LM head weight. Shape: (V, H), any of the same dtypes.
        bias: LM head bias or None. Shape: (V,).
        targets: token id to score for each row. Shape: (N,), int64, values in [0, V).
        chunk_size: rows of logits computed at once. The CPU kernel's extra memory is about
            chunk_size x min(V, 4096) accumulator values, the CUDA kernel's chunk_size x V.
        compute_entropy: also return each row's softmax entropy, from the same pass.

    Returns:
        ``(token_logps, logsumexp, entropy)``, each of shape (N,) in float32, or float64 when
        hidden or weight is float64; ``entropy`` has shape (0,) unless requested. Only
        ``token_logps`` carries a gradient.

    When hidden needs a gradient and the LM head does not (a frozen head), the forward pass also
    computes d token_logps / d hidden, an (N, H) tensor in the accumulator dtype. The backward
    pass then only scales it and recomputes no logits. The native library must be loaded first
    (``pyalign.ops.load_native_ops()``).
    """
    compute_jacobian = (
        torch.is_grad_enabled()
        and hidden.requires_grad
        and not weight.requires_grad
        and not (bias is not None and bias.requires_grad)
    )
    token_logps, logsumexp, entropy, _ = torch.ops.pyalign.fused_linear_logprobs(
        hidden, weight, bias, targets, chunk_size, compute_entropy, compute_jacobian
    )
    return token_logps, logsumexp, entropy


def _forward_fake(
    hidden, weight, bias, targets, chunk_size, compute_entropy=False, compute_jacobian=False
):
    # The C++ kernel checks the arguments; this only describes the outputs.
    dtype = accumulate_dtype(hidden, weight)
    num_tokens, hidden_size = hidden.shape
    token_logps = hidden.new_empty((num_tokens,), dtype=dtype)
    logsumexp = hidden.new_empty((num_tokens,), dtype=dtype)
    entropy = hidden.new_empty((num_tokens if compute_entropy else 0,), dtype=dtype)
    jacobian_rows = num_tokens if compute_jacobian else 0
    jacobian = hidden.new_empty((jacobian_rows, hidden_size), dtype=dtype)
    return token_logps, logsumexp, entropy, jacobian


def _backward_fake(
    grad_token_logps,
    hidden,
    weight,
    bias,
    targets,
    logsumexp,
    chunk_size,
    needs_hidden_grad,
    needs_weight_grad,
    needs_bias_grad,
):
    grad_hidden = hidden.new_empty(hidden.shape) if needs_hidden_grad else None
    grad_weight = weight.new_empty(weight.shape) if needs_weight_grad else None
    grad_bias = None
    if needs_bias_grad and bias is not None:
        grad_bias = bias.new_empty(bias.shape)
    return grad_hidden, grad_weight, grad_bias


def _setup_context(ctx, inputs, output):
    hidden, weight, bias, targets, chunk_size = inputs[:5]
    _, logsumexp, entropy, jacobian = output
    ctx.save_for_backward(hidden, weight, bias, targets, logsumexp, jacobian)
    ctx.chunk_size = chunk_size
    ctx.mark_non_differentiable(logsumexp, entropy, jacobian)


def _backward(ctx, grad_token_logps, grad_logsumexp, grad_entropy, grad_jacobian):
    hidden, weight, bias, targets, logsumexp, jacobian = ctx.saved_tensors
    needs_hidden_grad, needs_weight_grad, needs_bias_grad = ctx.needs_input_grad[:3]
    passthrough = (None,) * (len(ctx.needs_input_grad) - 3)

    head_grads = needs_weight_grad or needs_bias_grad
    # Under create_graph=True (grad mode on here) the Jacobian, a constant to autograd, would
    # give a wrong second derivative, so the backward op, whose derivative raises, runs instead.
    use_jacobian = jacobian.shape[0] == hidden.shape[0] and not torch.is_grad_enabled()
    if needs_hidden_grad and not head_grads and use_jacobian:
        grad_hidden = (jacobian * grad_token_logps.unsqueeze(1)).to(hidden.dtype)  # (N, H)
        return (grad_hidden, None, None, *passthrough)

    grad_hidden, grad_weight, grad_bias = torch.ops.pyalign.fused_linear_logprobs_backward(
        grad_token_logps,
        hidden,
        weight,
        bias,
        targets,
        logsumexp,
        ctx.chunk_size,
        needs_hidden_grad,
        needs_weight_grad,
        needs_bias_grad,
    )
    return (grad_hidden, grad_weight, grad_bias, *passthrough)


def register_python_kernels() -> None:
    """Register the fake kernels and the autograd formula; safe to call more than once."""
    global _registered
    with _registration_lock:
        if _registered:
            return
        torch.library.register_fake(FORWARD_OP, checking_devices(FORWARD_OP, _forward_fake))
        torch.library.register_fake(BACKWARD_OP, checking_devices(BACKWARD_OP, _backward_fake))
        torch.library.register_autograd(FORWARD_OP, _backward, setup_context=_setup_context)
        register_no_double_backward(BACKWARD_OP)
        _registered = True
