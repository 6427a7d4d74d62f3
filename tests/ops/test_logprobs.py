"""Tests of pyalign::fused_linear_logprobs and sequence_logprobs.

Expected values come from ``naive_sequence_logprobs`` below, which applies the LM head to every
position, or from the plain-PyTorch twin in ``pyalign.ops.reference``; never from the op.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pyalign import ops
from pyalign.ops import _build, reference
from pyalign.ops.logprobs import fused_linear_logprobs

REPO_ROOT = Path(__file__).resolve().parents[2]

# An odd shape: nothing is a power of two and no chunk size below divides N.
B, T, H, V = 3, 47, 31, 123
FULLY_MASKED_SEQUENCE = 1

# Float32 tolerances. The sums are near -200, where adjacent float32 values are 1.5e-5 apart,
# so they also get a relative tolerance of 1e-6 (about 13 ulps at that magnitude).
SUM_ATOL, SUM_RTOL = 1e-5, 1e-6
TOKEN_ATOL = 1e-5
GRAD_ATOL = 1e-4
# Entropies are up to log V = 4.8 here; the op's float32 exp is accurate to about 2 ulp.
ENTROPY_ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def native_backend() -> str:
    # Compiles the ops unless the cache already has a build of these sources.
    return ops.load_native_ops()


def make_inputs(dtype=torch.float32, with_bias=True, requires_grad=True):
    """Return random (hidden_states, weight, bias, input_ids, label_mask); one sequence masked."""
    hidden_states = torch.randn(B, T, H).to(dtype).requires_grad_(requires_grad)  # (B, T, H)
    weight = (0.3 * torch.randn(V, H)).to(dtype).requires_grad_(requires_grad)  # (V, H)
    bias = None
    if with_bias:
        bias = (0.1 * torch.randn(V)).to(dtype).requires_grad_(requires_grad)  # (V,)
    input_ids = torch.randint(0, V, (B, T))  # (B, T)
    label_mask = torch.rand(B, T) > 0.3  # (B, T)
    label_mask[FULLY_MASKED_SEQUENCE] = False
    return hidden_states, weight, bias, input_ids, label_mask


def naive_sequence_logprobs(hidden_states, weight, bias, input_ids, label_mask):
    """Return (sum, count, token_logps) computed from the full (B, T, V) logits.

    The logits are float32, or float64 for float64 hidden states.
    """
    acc_dtype = torch.float64 if hidden_states.dtype == torch.float64 else torch.float32
    acc_bias = None if bias is None else bias.to(acc_dtype)
    logits = torch.nn.functional.linear(
        hidden_states.to(acc_dtype), weight.to(acc_dtype), acc_bias
    )  # (B, T, V)
    # Position t - 1 predicts token t.
    logps = logits.log_softmax(dim=-1)[:, :-1]  # (B, T-1, V)
    token_logps = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    counted = label_mask[:, 1:]
    sums = torch.where(counted, token_logps, torch.zeros_like(token_logps)).sum(dim=1)
    return sums, counted.sum(dim=1), token_logps[counted]


def gradients(output_sum, tensors):
    """Return d (output_sum . coefficients) / d tensor for each tensor, None where not needed."""
    coefficients = torch.linspace(-1.0, 2.0, output_sum.shape[0], dtype=output_sum.dtype)
    needed = [tensor for tensor in tensors if tensor is not None and tensor.requires_grad]
    grads = iter(torch.autograd.grad((output_sum * coefficients).sum(), needed))
    return [
        next(grads) if tensor is not None and tensor.requires_grad else None for tensor in tensors
    ]


# Agreement with full logits


@pytest.mark.parametrize("implementation", ops.IMPLEMENTATIONS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("chunk_size", [1, 5, 16, 1000])
def test_sequence_logprobs_matches_full_logits(implementation, with_bias, chunk_size):
    hidden_states, weight, bias, input_ids, label_mask = make_inputs(with_bias=with_bias)
    inputs = (hidden_states, weight, bias)

    result = ops.sequence_logprobs(
        *inputs, input_ids, label_mask, implementation=implementation, chunk_size=chunk_size
    )
    expected_sum, expected_count, expected_tokens = naive_sequence_logprobs(
        *inputs, input_ids, label_mask
    )

    assert result.sum.dtype == torch.float32
    assert result.count.dtype == torch.int64
    torch.testing.assert_close(result.sum, expected_sum, atol=SUM_ATOL, rtol=SUM_RTOL)
    torch.testing.assert_close(result.count, expected_count)
    torch.testing.assert_close(result.token_logps, expected_tokens, atol=TOKEN_ATOL, rtol=0)
    expected_index = torch.arange(B).repeat_interleave(expected_count)
    torch.testing.assert_close(result.sequence_index, expected_index)

    grads = gradients(result.sum, inputs)
    expected_grads = gradients(expected_sum, inputs)
    for name, grad, expected in zip(("hidden", "weight", "bias"), grads, expected_grads):
        if expected is None:
            assert grad is None, name
            continue
        torch.testing.assert_close(grad, expected, atol=GRAD_ATOL, rtol=0, msg=name)


def test_fully_masked_sequence_is_zero():
    hidden_states, weight, bias, input_ids, label_mask = make_inputs()

    result = ops.sequence_logprobs(hidden_states, weight, bias, input_ids, label_mask)
    (grad_hidden,) = torch.autograd.grad(result.sum.sum(), [hidden_states])

    assert result.sum[FULLY_MASKED_SEQUENCE].item() == 0.0
    assert result.count[FULLY_MASKED_SEQUENCE].item() == 0
    assert not torch.isnan(result.sum).any()
    assert not torch.isnan(grad_hidden).any()
    assert torch.count_nonzero(grad_hidden[FULLY_MASKED_SEQUENCE]) == 0


@pytest.mark.parametrize("implementation", ops.IMPLEMENTATIONS)
def test_no_counted_tokens(implementation):
    hidden_states, weight, bias, input_ids, label_mask = make_inputs()
    label_mask[:] = False

    result = ops.sequence_logprobs(
        hidden_states, weight, bias, input_ids, label_mask, implementation=implementation
    )
    grads = torch.autograd.grad(result.sum.sum(), [hidden_states, weight, bias])

    torch.testing.assert_close(result.sum, torch.zeros(B))
    torch.testing.assert_close(result.count, torch.zeros(B, dtype=torch.int64))
    assert result.token_logps.shape == (0,)
    for grad in grads:
        assert torch.count_nonzero(grad) == 0


def test_single_token_sequences():
    # With T = 1 there is no position to predict, whatever the mask contains.
    hidden_states = torch.randn(2, 1, H, requires_grad=True)
    weight = torch.randn(V, H)
    input_ids = torch.randint(0, V, (2, 1))
    label_mask = torch.ones(2, 1, dtype=torch.bool)

    result = ops.sequence_logprobs(hidden_states, weight, None, input_ids, label_mask)

    torch.testing.assert_close(result.sum, torch.zeros(2))
    torch.testing.assert_close(result.count, torch.zeros(2, dtype=torch.int64))


# Frozen LM head


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_frozen_head_has_no_weight_grad(with_bias):
    hidden_states, weight, bias, input_ids, label_mask = make_inputs(with_bias=with_bias)
    weight.requires_grad_(False)
    if bias is not None:
        bias.requires_grad_(False)

    result = ops.sequence_logprobs(hidden_states, weight, bias, input_ids, label_mask)
    result.sum.sum().backward()
    expected_sum, _, _ = naive_sequence_logprobs(hidden_states, weight, bias, input_ids, label_mask)
    (expected_grad,) = torch.autograd.grad(expected_sum.sum(), [hidden_states])

    assert weight.grad is None
    if bias is not None:
        assert bias.grad is None
    torch.testing.assert_close(hidden_states.grad, expected_grad, atol=GRAD_ATOL, rtol=0)


def test_backward_op_skips_head_grads():
    hidden = torch.randn(9, H)
    weight = torch.randn(V, H)
    bias = torch.randn(V)
    targets = torch.randint(0, V, (9,))
    _, logsumexp, _ = fused_linear_logprobs(hidden, weight, bias, targets, 4)

    grad_hidden, grad_weight, grad_bias = torch.ops.pyalign.fused_linear_logprobs_backward(
        torch.ones(9), hidden, weight, bias, targets, logsumexp, 4, True, False, False
    )

    assert grad_hidden.shape == (9, H)
    assert grad_weight is None
    assert grad_bias is None


def test_backward_op_skips_hidden_grad():
    hidden = torch.randn(9, H)
    weight = torch.randn(V, H)
    bias = torch.randn(V)
    targets = torch.randint(0, V, (9,))
    _, logsumexp, _ = fused_linear_logprobs(hidden, weight, bias, targets, 4)

    grad_hidden, grad_weight, grad_bias = torch.ops.pyalign.fused_linear_logprobs_backward(
        torch.ones(9), hidden, weight, bias, targets, logsumexp, 4, False, True, True
    )

    assert grad_hidden is None
    assert grad_weight.shape == (V, H)
    assert grad_bias.shape == (V,)


def test_trainable_bias_on_frozen_weight():
    hidden_states, weight, bias, input_ids, label_mask = make_inputs()
    weight.requires_grad_(False)

    result = ops.sequence_logprobs(hidden_states, weight, bias, input_ids, label_mask)
    result.sum.sum().backward()
    expected_sum, _, _ = naive_sequence_logprobs(hidden_states, weight, bias, input_ids, label_mask)
    (expected_grad,) = torch.autograd.grad(expected_sum.sum(), [bias])

    assert weight.grad is None
    torch.testing.assert_close(bias.grad, expected_grad, atol=GRAD_ATOL, rtol=0)


# Low precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_matches_full_logits(dtype):
    hidden_states, weight, bias, input_ids, label_mask = make_inputs(dtype=dtype)
    inputs = (hidden_states, weight, bias)

    result = ops.sequence_logprobs(*inputs, input_ids, label_mask, chunk_size=7)
    expected_sum, expected_count, _ = naive_sequence_logprobs(*inputs, input_ids, label_mask)

    # Both sides upcast the same low-precision values and accumulate in float32, so the sums
    # keep the float32 tolerance.
    assert result.sum.dtype == torch.float32
    torch.testing.assert_close(result.sum, expected_sum, atol=SUM_ATOL, rtol=SUM_RTOL)
    torch.testing.assert_close(result.count, expected_count)

    # Each gradient is rounded once from float32 to the input dtype, and float32 values a few
    # ulps apart can round to neighbours 2**-8 apart (bfloat16), hence rtol 2**-7.
    grads = gradients(result.sum, inputs)
    expected_grads = gradients(expected_sum, inputs)
    for name, grad, expected in zip(("hidden", "weight", "bias"), grads, expected_grads):
        assert grad.dtype == dtype, name
        torch.testing.assert_close(grad, expected, atol=1e-4, rtol=2**-7, msg=name)


def test_bfloat16_vocabulary_larger_than_one_block():
    # The CPU kernel converts a bfloat16 weight to float32 in blocks of 4096 rows; 5000 rows
    # need two blocks, the second one partial, and targets fall in both.
    vocab_size, num_tokens, hidden_size = 5000, 11, 8
    hidden = torch.randn(num_tokens, hidden_size).bfloat16().requires_grad_()
    weight = torch.randn(vocab_size, hidden_size).bfloat16().requires_grad_()
    bias = torch.randn(vocab_size).bfloat16().requires_grad_()
    targets = torch.randint(0, vocab_size, (num_tokens,))
    targets[:2] = torch.tensor([4095, 4096])
    inputs = (hidden, weight, bias)

    token_logps, logsumexp, _ = fused_linear_logprobs(*inputs, targets, 4)
    expected_logps, expected_logsumexp, _ = reference.fused_linear_logprobs(*inputs, targets)

    torch.testing.assert_close(token_logps, expected_logps, atol=TOKEN_ATOL, rtol=1e-6)
    torch.testing.assert_close(logsumexp, expected_logsumexp, atol=TOKEN_ATOL, rtol=1e-6)

    grads = gradients(token_logps, inputs)
    expected_grads = gradients(expected_logps, inputs)
    for name, grad, expected in zip(("hidden", "weight", "bias"), grads, expected_grads):
        # Same single rounding to bfloat16 as in test_low_precision_matches_full_logits.
        torch.testing.assert_close(grad, expected, atol=1e-4, rtol=2**-7, msg=name)


def test_mixed_dtypes():
    # A bfloat16 decoder output with a float32 head: the op accumulates in float32 and returns
    # each gradient in its input's dtype.
    hidden = torch.randn(10, H).bfloat16().requires_grad_()
    weight = torch.randn(V, H, requires_grad=True)
    targets = torch.randint(0, V, (10,))

    token_logps, _, _ = fused_linear_logprobs(hidden, weight, None, targets, 3)
    expected_logps, _, _ = reference.fused_linear_logprobs(hidden, weight, None, targets)
    grad_hidden, grad_weight = gradients(token_logps, [hidden, weight])

    torch.testing.assert_close(token_logps, expected_logps, atol=TOKEN_ATOL, rtol=1e-6)
    assert grad_hidden.dtype == torch.bfloat16
    assert grad_weight.dtype == torch.float32


def test_float32_vocabulary_larger_than_one_block():
    # Every dtype is processed in vocabulary blocks of 4096 columns. Here the largest logits sit
    # in the second block, so the running maximum, sum and entropy are rescaled between blocks.
    vocab_size, num_tokens, hidden_size = 9000, 13, 8
    hidden = torch.randn(num_tokens, hidden_size, requires_grad=True)
    weight = torch.randn(vocab_size, hidden_size, requires_grad=True)
    bias = torch.zeros(vocab_size)
    bias[5000:5010] = 8.0
    bias.requires_grad_(True)
    targets = torch.randint(0, vocab_size, (num_tokens,))
    targets[:3] = torch.tensor([4095, 4096, 5003])
    inputs = (hidden, weight, bias)

    token_logps, logsumexp, entropy = fused_linear_logprobs(*inputs, targets, 5, True)
    expected_logps, expected_logsumexp, expected_entropy = reference.fused_linear_logprobs(
        *inputs, targets, compute_entropy=True
    )

    torch.testing.assert_close(token_logps, expected_logps, atol=TOKEN_ATOL, rtol=1e-6)
    torch.testing.assert_close(logsumexp, expected_logsumexp, atol=TOKEN_ATOL, rtol=1e-6)
    torch.testing.assert_close(entropy, expected_entropy, atol=ENTROPY_ATOL, rtol=0)
    grads = gradients(token_logps, inputs)
    expected_grads = gradients(expected_logps, inputs)
    for name, grad, expected in zip(("hidden", "weight", "bias"), grads, expected_grads):
        torch.testing.assert_close(grad, expected, atol=GRAD_ATOL, rtol=0, msg=name)


# Entropy, averages and the frozen-head Jacobian


def test_entropy_of_uniform_distribution():
    # A zero LM head gives equal logits, so p = 1 / V everywhere: the entropy is log V and each
    # token's log-probability is -log V.
    hidden = torch.randn(6, 4)
    weight = torch.zeros(V, 4)
    targets = torch.randint(0, V, (6,))

    token_logps, _, entropy = fused_linear_logprobs(hidden, weight, None, targets, 4, True)

    torch.testing.assert_close(entropy, torch.full((6,), math.log(V)), atol=1e-5, rtol=0)
    torch.testing.assert_close(token_logps, torch.full((6,), -math.log(V)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("implementation", ops.IMPLEMENTATIONS)
def test_sequence_entropy_and_mean(implementation, dtype):
    hidden_states, weight, bias, input_ids, label_mask = make_inputs(dtype=dtype)

    result = ops.sequence_logprobs(
        hidden_states,
        weight,
        bias,
        input_ids,
        label_mask,
        implementation=implementation,
        chunk_size=7,
        compute_entropy=True,
    )
    expected = ops.sequence_logprobs(
        hidden_states,
        weight,
        bias,
        input_ids,
        label_mask,
        implementation="torch",
        compute_entropy=True,
    )

    atol = 1e-12 if dtype == torch.float64 else ENTROPY_ATOL
    assert result.entropy.shape == result.token_logps.shape
    assert not result.entropy.requires_grad
    torch.testing.assert_close(result.entropy, expected.entropy, atol=atol, rtol=0)
    torch.testing.assert_close(result.mean, result.sum / result.count.clamp(min=1))
    assert result.mean[FULLY_MASKED_SEQUENCE].item() == 0.0
    assert ops.sequence_logprobs(hidden_states, weight, bias, input_ids, label_mask).entropy is None


def test_hidden_jacobian_output():
    # token_logps_i depends on hidden_i only, so the gradient of sum_i token_logps_i with
    # respect to hidden is the per-token Jacobian d token_logps_i / d hidden_i.
    hidden = torch.randn(11, H, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, H, dtype=torch.float64)
    bias = torch.randn(V, dtype=torch.float64)
    targets = torch.randint(0, V, (11,))

    outputs = torch.ops.pyalign.fused_linear_logprobs(hidden, weight, bias, targets, 4, False, True)
    expected_logps, _, _ = reference.fused_linear_logprobs(hidden, weight, bias, targets)
    (expected_jacobian,) = torch.autograd.grad(expected_logps.sum(), [hidden])

    assert outputs[2].shape == (0,)
    torch.testing.assert_close(outputs[3], expected_jacobian, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_frozen_head_uses_forward_jacobian(dtype):
    hidden = torch.randn(10, H).to(dtype).requires_grad_(True)
    weight = torch.randn(V, H).to(dtype)
    targets = torch.randint(0, V, (10,))

    token_logps, _, _ = fused_linear_logprobs(hidden, weight, None, targets, 3)
    expected_logps, _, _ = reference.fused_linear_logprobs(hidden, weight, None, targets)
    (grad,) = gradients(token_logps, [hidden])
    (expected,) = gradients(expected_logps, [hidden])

    assert grad.dtype == dtype
    rtol = 0 if dtype == torch.float32 else 2**-7
    torch.testing.assert_close(grad, expected, atol=GRAD_ATOL, rtol=rtol)
    with torch.no_grad():
        outputs = torch.ops.pyalign.fused_linear_logprobs(hidden, weight, None, targets, 3)
    assert outputs[3].shape == (0, H)


@pytest.mark.slow
def test_op_runs_inside_torch_compile():
    torch._dynamo.reset()
    hidden = torch.randn(12, H, requires_grad=True)
    weight = torch.randn(V, H, requires_grad=True)
    targets = torch.randint(0, V, (12,))

    def total(hidden, weight):
        token_logps, _, entropy = fused_linear_logprobs(hidden, weight, None, targets, 5, True)
        return token_logps.sum() + 0.0 * entropy.sum()

    expected = total(hidden, weight)
    expected_grads = torch.autograd.grad(expected, [hidden, weight])
    value = torch.compile(total, fullgraph=True)(hidden, weight)
    grads = torch.autograd.grad(value, [hidden, weight])

    torch.testing.assert_close(value, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)


# Masked logits, double backward, devices


def masked_first_block_inputs():
    # Every logit of the first 4096-column vocabulary block is -inf, so the CPU kernel's running
    # maximum is still -inf after that block.
    torch.manual_seed(0)
    hidden = torch.randn(3, 8)
    weight = torch.randn(4100, 8)
    bias = torch.zeros(4100)
    bias[:4096] = -math.inf
    targets = torch.tensor([4096, 4099, 4097])
    return hidden, weight, bias, targets


@pytest.mark.parametrize("head", ["frozen", "trainable"])
def test_vocabulary_block_of_masked_logits(head):
    hidden, weight, bias, targets = masked_first_block_inputs()
    hidden.requires_grad_()
    weight.requires_grad_(head == "trainable")
    expected_hidden = hidden.detach().clone().requires_grad_()
    expected_weight = weight.detach().clone().requires_grad_(head == "trainable")

    token_logps, _, entropy = fused_linear_logprobs(
        hidden, weight, bias, targets, chunk_size=2, compute_entropy=True
    )
    expected_logits = F.linear(expected_hidden, expected_weight, bias)
    expected = expected_logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    expected_entropy = torch.distributions.Categorical(logits=expected_logits).entropy()
    token_logps.sum().backward()
    expected.sum().backward()

    torch.testing.assert_close(token_logps, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, expected_entropy.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(hidden.grad, expected_hidden.grad, atol=1e-5, rtol=0)
    if head == "trainable":
        assert weight.grad[:4096].abs().max() < 1e-30
        torch.testing.assert_close(weight.grad, expected_weight.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("implementation", ops.IMPLEMENTATIONS)
def test_entropy_with_masked_logits(implementation):
    # A -inf logit has probability 0 and adds nothing to the entropy.
    torch.manual_seed(0)
    hidden = torch.randn(5, 8)
    weight = torch.randn(300, 8)
    bias = torch.zeros(300)
    bias[100:] = -math.inf
    input_ids = torch.zeros(1, 5, dtype=torch.long)
    label_mask = torch.ones(1, 5, dtype=torch.bool)
    label_mask[0, 0] = False

    result = ops.sequence_logprobs(
        hidden[None],
        weight,
        bias,
        input_ids,
        label_mask,
        implementation=implementation,
        compute_entropy=True,
    )

    # Position t - 1 predicts token t, so the last position scores nothing.
    logits = F.linear(hidden[:-1], weight, bias)
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(result.entropy, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", ["frozen", "trainable"])
def test_double_backward_raises(head):
    torch.manual_seed(0)
    hidden = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 4, dtype=torch.float64, requires_grad=head == "trainable")
    targets = torch.randint(0, 50, (5,))
    token_logps = fused_linear_logprobs(hidden, weight, None, targets, 2)[0]
    (grad,) = torch.autograd.grad((token_logps**2).sum(), hidden, create_graph=True)

    with pytest.raises(ops.DoubleBackwardError, match="first derivatives only"):
        grad.sum().backward()


def test_first_derivative_under_create_graph():
    # A frozen head normally takes its hidden gradient from the saved Jacobian; under
    # create_graph=True it comes from the backward op, with the same value.
    torch.manual_seed(0)
    hidden = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 4, dtype=torch.float64)
    targets = torch.randint(0, 50, (5,))

    token_logps = fused_linear_logprobs(hidden, weight, None, targets, 2)[0]
    (grad,) = torch.autograd.grad((token_logps**2).sum(), hidden, create_graph=True)
    expected_logps = F.linear(hidden, weight).log_softmax(-1).gather(-1, targets[:, None])
    (expected,) = torch.autograd.grad((expected_logps**2).sum(), hidden)

    torch.testing.assert_close(grad, expected)


def test_mixed_meta_device_raises():
    # With one meta input the dispatcher runs the fake kernel, which must not hand back empty
    # CPU tensors as if they were results.
    hidden = torch.randn(6, 8)
    weight = torch.randn(300, 8, device="meta")
    targets = torch.randint(0, 300, (6,))

    with pytest.raises(ValueError, match="weight on meta"):
        torch.ops.pyalign.fused_linear_logprobs(hidden, weight, None, targets, 4)


# Float64, gradcheck and opcheck


def test_gradcheck_float64():
    hidden = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 6, 3, 3, 1, 5])

    token_logps, logsumexp, _ = fused_linear_logprobs(hidden, weight, bias, targets, 4)

    assert token_logps.dtype == torch.float64
    assert logsumexp.dtype == torch.float64
    assert torch.autograd.gradcheck(
        lambda h, w, b: fused_linear_logprobs(h, w, b, targets, 4)[0], (hidden, weight, bias)
    )


def test_gradcheck_sequence_logprobs_float64():
    hidden_states = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    input_ids = torch.randint(0, 6, (2, 5))
    label_mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)

    def sums(hidden_states, weight):
        return ops.sequence_logprobs(
            hidden_states, weight, None, input_ids, label_mask, chunk_size=2
        ).sum

    assert torch.autograd.gradcheck(sums, (hidden_states, weight))


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_opcheck_forward(with_bias):
    hidden = torch.randn(10, 6, requires_grad=True)
    weight = torch.randn(13, 6, requires_grad=True)
    bias = torch.randn(13, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 13, (10,))

    torch.library.opcheck(
        torch.ops.pyalign.fused_linear_logprobs.default, (hidden, weight, bias, targets, 3)
    )


@pytest.mark.parametrize(
    ("compute_entropy", "compute_hidden_jacobian"),
    [(True, False), (False, True), (True, True)],
    ids=["entropy", "jacobian", "both"],
)
def test_opcheck_forward_with_outputs(compute_entropy, compute_hidden_jacobian):
    hidden = torch.randn(10, 6, requires_grad=True)
    weight = torch.randn(13, 6)
    bias = torch.randn(13)
    targets = torch.randint(0, 13, (10,))
    arguments = (hidden, weight, bias, targets, 3, compute_entropy, compute_hidden_jacobian)

    torch.library.opcheck(torch.ops.pyalign.fused_linear_logprobs.default, arguments)


@pytest.mark.parametrize(
    "needs",
    [(True, True, True), (True, False, False), (False, True, False), (False, False, True)],
    ids=["all", "hidden", "weight", "bias"],
)
def test_opcheck_backward(needs):
    hidden = torch.randn(10, 6)
    weight = torch.randn(13, 6)
    bias = torch.randn(13)
    targets = torch.randint(0, 13, (10,))
    logsumexp = torch.logsumexp(hidden @ weight.T + bias, dim=-1)
    arguments = (torch.randn(10), hidden, weight, bias, targets, logsumexp, 3, *needs)

    torch.library.opcheck(torch.ops.pyalign.fused_linear_logprobs_backward.default, arguments)


# Implementation selection


def test_torch_implementation_logs_selection(caplog, monkeypatch):
    # The selection is logged once per process; forget an earlier one.
    monkeypatch.setattr(ops, "_torch_selection_logged", False)
    hidden_states, weight, bias, input_ids, label_mask = make_inputs()

    with caplog.at_level(logging.INFO, logger="pyalign.ops"):
        ops.sequence_logprobs(
            hidden_states, weight, bias, input_ids, label_mask, implementation="torch"
        )

    messages = [record.getMessage() for record in caplog.records if record.name == "pyalign.ops"]
    assert any("plain-PyTorch implementation was selected" in message for message in messages)


def test_unknown_implementation_raises():
    hidden_states, weight, bias, input_ids, label_mask = make_inputs()

    with pytest.raises(ValueError, match="'native', 'torch'.*got 'triton'"):
        ops.sequence_logprobs(
            hidden_states, weight, bias, input_ids, label_mask, implementation="triton"
        )
    with pytest.raises(ValueError, match="'native', 'torch'"):
        ops.load_backend("triton")


def test_backend_descriptions(native_backend):
    assert native_backend.startswith("native C++ (CPU) from ")
    assert Path(native_backend.removeprefix("native C++ (CPU) from ")).is_file()
    assert ops.load_backend("native") == native_backend
    assert ops.load_backend("torch") == "plain PyTorch (pyalign.ops.reference)"


# Bad arguments


def _op_arguments(**overrides):
    arguments = {
        "hidden": torch.randn(5, 4),
        "weight": torch.randn(7, 4),
        "bias": torch.randn(7),
        "targets": torch.randint(0, 7, (5,)),
        "chunk_size": 2,
    }
    arguments.update(overrides)
    return arguments


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"hidden": torch.randn(5, 4, 1)}, ValueError, r"hidden must be a 2-D \(N, H\) tensor"),
        ({"weight": torch.randn(7)}, ValueError, r"weight must be a 2-D \(V, H\) tensor"),
        (
            {"weight": torch.randn(7, 3)},
            ValueError,
            r"H = hidden.size\(1\) = 4, got shape \[7, 3\]",
        ),
        ({"weight": torch.randn(0, 4)}, ValueError, r"at least one row"),
        ({"bias": torch.randn(6)}, ValueError, r"bias must have shape \(V,\) with V = .* = 7"),
        (
            {"targets": torch.zeros(4, dtype=torch.int64)},
            ValueError,
            r"targets must have shape \(N,\)",
        ),
        (
            {"targets": torch.zeros(5, dtype=torch.int32)},
            TypeError,
            r"targets must be int64, got int32",
        ),
        (
            {"targets": torch.tensor([0, 1, 7, 2, 3])},
            ValueError,
            r"targets\[2\] = 7 is outside .*\[0, 7\)",
        ),
        ({"targets": torch.tensor([0, -1, 2, 2, 3])}, ValueError, r"targets\[1\] = -1 is outside"),
        (
            {"hidden": torch.randn(5, 4, dtype=torch.float64).int()},
            TypeError,
            r"hidden must be float16, bfloat16, float32 or float64, got int32",
        ),
        ({"chunk_size": 0}, ValueError, r"chunk_size must be positive, got 0"),
    ],
    ids=[
        "hidden-3d",
        "weight-1d",
        "hidden-size",
        "empty-vocabulary",
        "bias-shape",
        "targets-shape",
        "targets-dtype",
        "target-too-large",
        "target-negative",
        "hidden-dtype",
        "chunk-size",
    ],
)
def test_op_rejects_bad_arguments(overrides, error, message):
    arguments = _op_arguments(**overrides)

    with pytest.raises(error, match=message):
        torch.ops.pyalign.fused_linear_logprobs(*arguments.values())


def test_backward_op_rejects_bad_gradient_shape():
    arguments = _op_arguments()
    logsumexp = torch.zeros(5)

    with pytest.raises(
        ValueError, match=r"grad_token_logps must have shape \(N,\) with N = .* = 5"
    ):
        torch.ops.pyalign.fused_linear_logprobs_backward(
            torch.ones(4), *list(arguments.values())[:4], logsumexp, 2, True, True, True
        )


@pytest.mark.parametrize(
    ("argument", "value", "error", "message"),
    [
        (
            "hidden_states",
            torch.randn(B, T),
            ValueError,
            r"hidden_states must have shape \(B, T, H\)",
        ),
        (
            "weight",
            torch.randn(V, H + 1),
            ValueError,
            r"weight must have shape \(V, H\) with H = 31",
        ),
        ("bias", torch.randn(V + 1), ValueError, r"bias must have shape \(V,\) with V = 123"),
        (
            "input_ids",
            torch.zeros(B, T - 1, dtype=torch.int64),
            ValueError,
            r"input_ids must have shape \(B, T\) = \(3, 47\)",
        ),
        ("input_ids", torch.zeros(B, T, dtype=torch.int32), TypeError, r"input_ids must be int64"),
        ("label_mask", torch.ones(B, T, dtype=torch.int64), TypeError, r"label_mask must be bool"),
        (
            "label_mask",
            torch.ones(B, T - 1, dtype=torch.bool),
            ValueError,
            r"label_mask must have shape",
        ),
        ("chunk_size", 0, ValueError, r"chunk_size must be a positive int below 2\*\*63, got 0"),
        (
            "chunk_size",
            2.0,
            ValueError,
            r"chunk_size must be a positive int below 2\*\*63, got 2.0",
        ),
        ("chunk_size", 2**63, ValueError, r"chunk_size must be a positive int below 2\*\*63"),
    ],
    ids=[
        "hidden-2d",
        "weight-hidden-size",
        "bias-shape",
        "input-ids-shape",
        "input-ids-dtype",
        "label-mask-dtype",
        "label-mask-shape",
        "chunk-size-zero",
        "chunk-size-float",
        "chunk-size-too-large",
    ],
)
def test_sequence_logprobs_rejects_bad_arguments(argument, value, error, message):
    hidden_states, weight, bias, input_ids, label_mask = make_inputs()
    arguments = {
        "hidden_states": hidden_states,
        "weight": weight,
        "bias": bias,
        "input_ids": input_ids,
        "label_mask": label_mask,
        "chunk_size": 4,
    }
    arguments[argument] = value

    with pytest.raises(error, match=message):
        ops.sequence_logprobs(**arguments)


def test_reference_rejects_out_of_range_targets():
    with pytest.raises(
        ValueError, match=r"targets must be token ids in \[0, 7\), got values from 0 to 9"
    ):
        reference.fused_linear_logprobs(
            torch.randn(2, 4), torch.randn(7, 4), None, torch.tensor([0, 9])
        )


# Build and cache


def test_build_failure_reports_compiler_output(tmp_path):
    source_dir = tmp_path / "csrc"
    source_dir.mkdir()
    (source_dir / "logprobs.cpp").write_text("#error deliberately broken test source\n")

    with pytest.raises(_build.NativeOpsBuildError, match="deliberately broken") as raised:
        _build.build_library(source_dir, tmp_path / "cache")

    assert isinstance(raised.value, RuntimeError)
    log_files = list((tmp_path / "cache").glob("*/build_error.log"))
    assert len(log_files) == 1
    assert "deliberately broken" in log_files[0].read_text()


def test_missing_sources_lists_candidates(tmp_path):
    candidates = [tmp_path / "first", tmp_path / "second"]

    with pytest.raises(_build.NativeOpsBuildError, match="not found; looked in") as raised:
        _build.find_source_dir(candidates)

    for candidate in candidates:
        assert str(candidate) in str(raised.value)


def test_source_dir_found_in_checkout():
    assert _build.find_source_dir() == REPO_ROOT / "csrc"


def test_build_key_follows_sources(tmp_path):
    source_dir = tmp_path / "csrc"
    (source_dir / "cpu").mkdir(parents=True)
    (source_dir / "logprobs.cpp").write_text("int a;\n")
    (source_dir / "cpu" / "logprobs_cpu.cpp").write_text("int b;\n")
    first_key = _build.build_key(source_dir, with_cuda=False)

    (source_dir / "cpu" / "logprobs_cpu.cpp").write_text("int c;\n")

    assert first_key.startswith(f"{torch.__version__}-")
    assert _build.build_key(source_dir, with_cuda=False) != first_key
    assert _build.build_key(source_dir, with_cuda=True) != _build.build_key(
        source_dir, with_cuda=False
    )


def test_cuda_headers_beside_system_torch(tmp_path, monkeypatch):
    # In a virtual environment made with --system-site-packages, torch and its nvidia packages
    # live in the system site-packages, not in the environment's own.
    system_site = tmp_path / "system-site"
    (system_site / "torch").mkdir(parents=True)
    (system_site / "torch" / "__init__.py").write_text("")
    headers = system_site / "nvidia" / "cu13" / "include"
    headers.mkdir(parents=True)
    (headers / "cublas_v2.h").write_text("")
    pip_nvcc = system_site / "nvidia" / "cu13" / "bin" / "nvcc"
    pip_nvcc.parent.mkdir()
    pip_nvcc.write_text("")
    environment_site = tmp_path / "venv-site"
    environment_site.mkdir()
    monkeypatch.setattr(torch, "__file__", str(system_site / "torch" / "__init__.py"))
    monkeypatch.setattr(
        _build.sysconfig,
        "get_paths",
        lambda: {"purelib": environment_site, "platlib": environment_site},
    )
    monkeypatch.setattr(_build.site, "getsitepackages", lambda: [str(environment_site)])
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setattr(_build.shutil, "which", lambda name: None)

    assert _build.find_nvcc() == pip_nvcc
    assert headers in _build.cuda_include_dirs(pip_nvcc)


def test_second_process_reuses_build(native_backend):
    library_path = Path(native_backend.removeprefix("native C++ (CPU) from "))
    modified_before = library_path.stat().st_mtime_ns
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    )

    completed = subprocess.run(
        [sys.executable, "-c", "from pyalign import ops; print(ops.load_native_ops())"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == native_backend
    assert library_path.stat().st_mtime_ns == modified_before
