"""CUDA kernels against the plain-PyTorch twins and the CPU kernels; skipped without a GPU.

Run on a GPU machine with ``python -m pytest -m gpu tests/ops``; ``bench/gpu_check.sh`` does that
and then runs the GPU benchmark.
"""

from __future__ import annotations

import pytest
import torch

from pyalign import ops
from pyalign.losses import PreferenceLogps, dpo_loss, grpo_loss, kto_loss, orpo_loss
from pyalign.ops import reference
from pyalign.ops.logprobs import fused_linear_logprobs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")
# The odd shape of the CPU tests, and a vocabulary large enough for several thread blocks' worth
# of work per row.
N, H, V = 47, 31, 5003


@pytest.fixture(scope="module", autouse=True)
def native_backend() -> str:
    description = ops.load_native_ops()
    assert "CUDA" in description, description
    return description


def gradients(output, inputs):
    coefficients = torch.linspace(-1.0, 2.0, output.shape[0], device=output.device)
    weighted = (output.float() * coefficients).sum()
    return torch.autograd.grad(weighted, [tensor for tensor in inputs if tensor.requires_grad])


def logprob_inputs(dtype, weight_grad=True, with_bias=True):
    hidden = torch.randn(N, H, device=CUDA).to(dtype).requires_grad_(True)
    weight = (0.3 * torch.randn(V, H, device=CUDA)).to(dtype).requires_grad_(weight_grad)
    bias = None
    if with_bias:
        bias = (0.1 * torch.randn(V, device=CUDA)).to(dtype).requires_grad_(weight_grad)
    targets = torch.randint(0, V, (N,), device=CUDA)
    return hidden, weight, bias, targets


# float32 products on CUDA may use TF32 when torch allows it; the tests keep full float32.
@pytest.fixture(autouse=True)
def full_float32():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("chunk_size", [1, 16, 1024])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_logprobs_float32_match_twin(chunk_size, with_bias):
    hidden, weight, bias, targets = logprob_inputs(torch.float32, with_bias=with_bias)
    inputs = [tensor for tensor in (hidden, weight, bias) if tensor is not None]

    token_logps, logsumexp, entropy = fused_linear_logprobs(
        hidden, weight, bias, targets, chunk_size, True
    )
    expected_logps, expected_logsumexp, expected_entropy = reference.fused_linear_logprobs(
        hidden, weight, bias, targets, compute_entropy=True
    )

    torch.testing.assert_close(token_logps, expected_logps, atol=2e-5, rtol=1e-6)
    torch.testing.assert_close(logsumexp, expected_logsumexp, atol=2e-5, rtol=1e-6)
    torch.testing.assert_close(entropy, expected_entropy, atol=2e-5, rtol=0)
    for grad, expected in zip(gradients(token_logps, inputs), gradients(expected_logps, inputs)):
        torch.testing.assert_close(grad, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_logprobs_low_precision_match_twin(dtype):
    hidden, weight, bias, targets = logprob_inputs(dtype)
    inputs = [hidden, weight, bias]

    token_logps, _, _ = fused_linear_logprobs(hidden, weight, bias, targets, 16)
    expected_logps, _, _ = reference.fused_linear_logprobs(hidden, weight, bias, targets)

    # Both sides multiply the same low-precision values with float32 accumulation, but the
    # tensor-core products sum in another order than the twin's upcast float32 product.
    torch.testing.assert_close(token_logps, expected_logps, atol=1e-3, rtol=1e-4)
    # The op rounds d loss / d logits to the input dtype before its products (the twin keeps
    # float32), so gradients agree to a few low-precision ulps.
    for grad, expected in zip(gradients(token_logps, inputs), gradients(expected_logps, inputs)):
        assert grad.dtype == dtype
        torch.testing.assert_close(grad.float(), expected.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_frozen_head_jacobian_matches_twin(dtype):
    hidden, weight, bias, targets = logprob_inputs(dtype, weight_grad=False)

    token_logps, _, _ = fused_linear_logprobs(hidden, weight, bias, targets, 8)
    expected_logps, _, _ = reference.fused_linear_logprobs(hidden, weight, bias, targets)
    (grad,) = gradients(token_logps, [hidden])
    (expected,) = gradients(expected_logps, [hidden])

    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(grad.float(), expected.float(), atol=tolerance, rtol=tolerance)


def test_sequence_logprobs_cuda_matches_cpu():
    hidden_states = torch.randn(3, 29, H, device=CUDA, requires_grad=True)
    weight = (0.3 * torch.randn(V, H, device=CUDA)).requires_grad_(True)
    input_ids = torch.randint(0, V, (3, 29), device=CUDA)
    label_mask = torch.rand(3, 29, device=CUDA) > 0.3
    label_mask[1] = False

    result = ops.sequence_logprobs(
        hidden_states, weight, None, input_ids, label_mask, compute_entropy=True
    )
    cpu_inputs = [tensor.detach().cpu().requires_grad_(True) for tensor in (hidden_states, weight)]
    expected = ops.sequence_logprobs(
        *cpu_inputs, None, input_ids.cpu(), label_mask.cpu(), compute_entropy=True
    )

    torch.testing.assert_close(result.sum.cpu(), expected.sum, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(result.entropy.cpu(), expected.entropy, atol=2e-5, rtol=0)
    assert not torch.isnan(result.sum).any()
    grads = torch.autograd.grad(result.sum.sum(), [hidden_states, weight])
    expected_grads = torch.autograd.grad(expected.sum.sum(), cpu_inputs)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad.cpu(), expected_grad, atol=1e-4, rtol=1e-5)


def test_opcheck_logprobs_cuda():
    hidden, weight, bias, targets = logprob_inputs(torch.float32)
    torch.library.opcheck(
        torch.ops.pyalign.fused_linear_logprobs.default,
        (hidden, weight, bias, targets, 8, True, False),
    )
    _, logsumexp, _ = fused_linear_logprobs(hidden, weight, bias, targets, 8)
    arguments = (
        torch.randn(N, device=CUDA),
        hidden.detach(),
        weight.detach(),
        bias.detach(),
        targets,
        logsumexp,
        8,
        True,
        True,
        True,
    )
    torch.library.opcheck(torch.ops.pyalign.fused_linear_logprobs_backward.default, arguments)


def test_logprobs_reject_out_of_range_target():
    hidden, weight, bias, targets = logprob_inputs(torch.float32)
    targets[3] = V
    with pytest.raises(ValueError, match=r"targets must be in the vocabulary \[0, 5003\)"):
        fused_linear_logprobs(hidden, weight, bias, targets, 8)


# Losses: the CUDA kernels against the twins, through the public functions


def _pairs(num_pairs=37):
    tokens = torch.randint(0, 30, (2, num_pairs), device=CUDA)

    def sums():
        return (-torch.rand(num_pairs, device=CUDA) * 40).requires_grad_(True)

    return PreferenceLogps(sums(), sums(), tokens[0], tokens[1]), PreferenceLogps(sums(), sums())


def _agree(run, inputs):
    results = {}
    for implementation in ("native", "torch"):
        loss, metrics = run(implementation)
        results[implementation] = (loss, metrics, torch.autograd.grad(loss, inputs))
    (loss, metrics, grads), (twin_loss, twin_metrics, twin_grads) = results.values()
    torch.testing.assert_close(loss, twin_loss, atol=1e-6, rtol=1e-5)
    for name in metrics:
        torch.testing.assert_close(metrics[name], twin_metrics[name], atol=1e-6, rtol=1e-5)
    for grad, twin_grad in zip(grads, twin_grads):
        torch.testing.assert_close(grad, twin_grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust", "hinge", "ipo", "simpo", "cpo"])
def test_dpo_cuda_matches_twin(loss_type):
    policy, reference_logps = _pairs()
    reference_logps = None if loss_type in ("simpo", "cpo") else reference_logps
    smoothing = 0.1 if loss_type in ("sigmoid", "robust", "simpo", "cpo") else 0.0
    inputs = [policy.chosen, policy.rejected]

    _agree(
        lambda implementation: dpo_loss(
            policy,
            reference_logps,
            0.3,
            loss_type,
            smoothing,
            rpo_alpha=0.5,
            implementation=implementation,
        ),
        inputs,
    )


def test_kto_orpo_grpo_cuda_match_twin():
    policy, reference_logps = _pairs()
    labels = torch.rand(37, device=CUDA) > 0.5
    kl = torch.tensor(0.3, device=CUDA)
    _agree(
        lambda implementation: kto_loss(
            policy.chosen,
            reference_logps.chosen,
            labels,
            kl,
            0.2,
            implementation=implementation,
        ),
        [policy.chosen],
    )
    _agree(
        lambda implementation: orpo_loss(policy, 0.2, implementation=implementation),
        [policy.chosen, policy.rejected],
    )

    logps = (-torch.rand(5, 47, device=CUDA) * 3).requires_grad_(True)
    old = logps.detach() + 0.3 * torch.randn(5, 47, device=CUDA)
    ref = logps.detach() + 0.3 * torch.randn(5, 47, device=CUDA)
    advantages = torch.tensor([1.0, -0.5, 0.0, 2.0, -1.0], device=CUDA)
    mask = torch.rand(5, 47, device=CUDA) > 0.3
    mask[2] = False
    for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
        _agree(
            lambda implementation: grpo_loss(
                logps,
                old,
                ref,
                advantages,
                mask,
                0.04,
                0.2,
                0.28,
                loss_type,
                64,
                implementation=implementation,
            ),
            [logps],
        )


def test_opcheck_losses_cuda():
    policy, reference_logps = _pairs(6)
    torch.library.opcheck(
        torch.ops.pyalign.dpo_loss.default,
        (
            policy.chosen,
            policy.rejected,
            reference_logps.chosen,
            reference_logps.rejected,
            policy.chosen_tokens,
            policy.rejected_tokens,
            "ipo",
            0.3,
            0.0,
            0.5,
        ),
    )
    logps = (-torch.rand(3, 5, device=CUDA)).requires_grad_(True)
    torch.library.opcheck(
        torch.ops.pyalign.grpo_loss.default,
        (
            logps,
            logps.detach() + 0.1,
            logps.detach() - 0.1,
            torch.tensor([1.0, -1.0, 0.5], device=CUDA),
            torch.rand(3, 5, device=CUDA) > 0.2,
            0.04,
            0.2,
            0.2,
        ),
    )
