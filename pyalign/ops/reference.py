"""Plain-PyTorch twins of the C++ ops, for tests and for ``implementation="torch"``.

Each twin computes what its op computes in the most direct way, with autograd doing the
backward pass. They materialise the full (N, V) logits in float32, so they need N x V x 4 bytes
where the fused op needs chunk_size x V x 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fused_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute ``log_softmax(hidden @ weight.T + bias)[i, targets[i]]`` with full logits.

    Twin of ``pyalign::fused_linear_logprobs``: same arguments except ``chunk_size``, same
    ``(token_logps, logsumexp)`` outputs of shape (N,), in float32 or, when hidden or weight is
    float64, in float64.
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
    return target_logits - logsumexp, logsumexp.detach()
