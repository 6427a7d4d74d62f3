"""Sequence log-probabilities from decoder hidden states and the LM head.

:func:`sequence_logprobs` is what the trainer calls. It selects the response tokens, scores them
with the fused C++ op ``pyalign::fused_linear_logprobs`` (``implementation="native"``) or its
plain-PyTorch twin (``implementation="torch"``), and sums and averages the token log-probabilities
per sequence. The native op is compiled on first use; see ``pyalign.ops._build``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pyalign.ops import reference
from pyalign.ops._build import NativeOpsBuildError, load_library
from pyalign.ops._checks import DoubleBackwardError
from pyalign.ops.logprobs import fused_linear_logprobs

__all__ = [
    "IMPLEMENTATIONS",
    "DoubleBackwardError",
    "NativeOpsBuildError",
    "SequenceLogprobs",
    "load_backend",
    "load_native_ops",
    "sequence_logprobs",
]

logger = logging.getLogger(__name__)

IMPLEMENTATIONS = ("native", "torch")

_torch_selection_logged = False


@dataclass(frozen=True)
class SequenceLogprobs:
    """Log-probabilities of the counted tokens of each sequence, per sequence and per token.

    ``sum``, ``mean``, ``token_logps`` and ``entropy`` are float32, or float64 when the hidden
    states or the LM head are float64. A sequence with no counted token has ``sum`` 0, ``mean``
    0 and ``count`` 0.
    """

    sum: torch.Tensor  # (B,)
    count: torch.Tensor  # (B,) int64
    token_logps: torch.Tensor  # (N,) one entry per counted token, in row-major (b, t) order
    sequence_index: torch.Tensor  # (N,) int64, the sequence b of each entry of token_logps
    # (B,) sum / count, the average log-probability per counted token
    mean: torch.Tensor
    # (N,) the softmax entropy at each counted token, without gradient; None unless requested
    entropy: torch.Tensor | None = None


def load_native_ops() -> str:
    """Compile (on first use) and load the C++ ops; return a description of the backend.

    Raises NativeOpsBuildError when the sources are missing or fail to compile.
    """
    return load_library().describe()


def load_backend(implementation: str) -> str:
    """Prepare the ops for ``implementation`` and return a description to log."""
    _check_implementation(implementation)
    if implementation == "native":
        return load_native_ops()
    return "plain PyTorch (pyalign.ops.reference)"


def sequence_logprobs(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    input_ids: torch.Tensor,
    label_mask: torch.Tensor,
    *,
    implementation: str = "native",
    chunk_size: int = 1024,
    compute_entropy: bool = False,
) -> SequenceLogprobs:
    """Sum the log-probabilities of the counted tokens of each sequence.

    The token at position t is predicted from ``hidden_states[:, t - 1]``, so ``label_mask[:, 0]``
    is ignored. Only the N positions whose shifted label is counted reach the LM head.

    Args:
        hidden_states: last decoder layer output, after the final norm. Shape: (B, T, H).
        weight: LM head weight. Shape: (V, H).
        bias: LM head bias or None. Shape: (V,).
        input_ids: token ids, int64. Shape: (B, T).
        label_mask: True on tokens whose log-probability counts (the response). Shape: (B, T).
        implementation: "native" for the fused C++ op, "torch" for the plain-PyTorch twin,
            which materialises the full (N, V) float32 logits.
        chunk_size: tokens per chunk of logits in the native op. Its extra memory is about
            chunk_size x min(V, 4096) float32 values on CPU, chunk_size x V on CUDA.
        compute_entropy: also return the softmax entropy at each counted token (for logging,
            as GRPO trainers do), computed in the same pass over the vocabulary.

    Gradients flow to hidden_states, weight and bias when they require grad.
    """
    _check_implementation(implementation)
    _check_sequence_arguments(hidden_states, weight, bias, input_ids, label_mask, chunk_size)

    # Select the counted positions of the shifted sequences.
    batch_size = hidden_states.shape[0]
    counted = label_mask[:, 1:]  # (B, T-1)
    hidden = hidden_states[:, :-1][counted]  # (N, H)
    targets = input_ids[:, 1:][counted]  # (N,)
    sequence_index = counted.nonzero()[:, 0]  # (N,)

    token_logps, _, entropy = _score_tokens(
        hidden, weight, bias, targets, implementation, chunk_size, compute_entropy
    )

    # Sum per sequence, in float64: index_add adds in sequence, and over a thousand float32
    # log-probabilities near -12 that drifts by about 1e-2 (measured at V = 151,936), where a
    # float64 sum rounded once is exact to float32 precision. index_add leaves 0 for a sequence
    # without counted tokens.
    sums = token_logps.new_zeros(batch_size, dtype=torch.float64)
    sums = sums.index_add(0, sequence_index, token_logps.double()).to(token_logps.dtype)  # (B,)
    count = counted.sum(dim=1)  # (B,)
    return SequenceLogprobs(
        sum=sums,
        count=count,
        token_logps=token_logps,
        sequence_index=sequence_index,
        mean=sums / count.clamp(min=1),
        entropy=entropy if compute_entropy else None,
    )


def _score_tokens(hidden, weight, bias, targets, implementation, chunk_size, compute_entropy):
    global _torch_selection_logged
    if implementation == "torch":
        if not _torch_selection_logged:
            logger.info(
                "sequence_logprobs: the plain-PyTorch implementation was selected, so the full "
                "(tokens x vocabulary) float32 logits are materialised"
            )
            _torch_selection_logged = True
        return reference.fused_linear_logprobs(hidden, weight, bias, targets, compute_entropy)

    library = load_library()
    if hidden.device.type not in library.device_types:
        raise NotImplementedError(
            f"the native ops have kernels for {', '.join(library.device_types)} only, but the "
            f"hidden states are on {hidden.device}; use implementation='torch' on this device"
        )
    return fused_linear_logprobs(hidden, weight, bias, targets, chunk_size, compute_entropy)


def _check_implementation(implementation: str) -> None:
    if implementation not in IMPLEMENTATIONS:
        allowed = ", ".join(repr(name) for name in IMPLEMENTATIONS)
        raise ValueError(f"implementation must be one of {allowed}, got {implementation!r}")


def _check_sequence_arguments(hidden_states, weight, bias, input_ids, label_mask, chunk_size):
    if hidden_states.dim() != 3:
        raise ValueError(
            f"hidden_states must have shape (B, T, H), got {tuple(hidden_states.shape)}"
        )
    batch_size, seq_len, hidden_size = hidden_states.shape
    if not hidden_states.is_floating_point():
        raise TypeError(f"hidden_states must be floating point, got {hidden_states.dtype}")
    if weight.dim() != 2 or weight.shape[1] != hidden_size:
        raise ValueError(
            f"weight must have shape (V, H) with H = {hidden_size} from hidden_states, "
            f"got {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise TypeError(f"weight must be floating point, got {weight.dtype}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"bias must have shape (V,) with V = {weight.shape[0]} from weight, "
            f"got {tuple(bias.shape)}"
        )

    expected = (batch_size, seq_len)
    if tuple(input_ids.shape) != expected:
        raise ValueError(
            f"input_ids must have shape (B, T) = {expected} like hidden_states, "
            f"got {tuple(input_ids.shape)}"
        )
    if input_ids.dtype != torch.int64:
        raise TypeError(f"input_ids must be int64, got {input_ids.dtype}")
    if tuple(label_mask.shape) != expected:
        raise ValueError(
            f"label_mask must have shape (B, T) = {expected} like hidden_states, "
            f"got {tuple(label_mask.shape)}"
        )
    if label_mask.dtype != torch.bool:
        raise TypeError(f"label_mask must be bool, got {label_mask.dtype}")

    # bool is a subclass of int, but chunk_size=True is certainly a mistake. The op takes an
    # int64.
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or not 0 < chunk_size < 2**63
    ):
        raise ValueError(f"chunk_size must be a positive int below 2**63, got {chunk_size!r}")
