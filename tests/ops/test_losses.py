"""Tests of the preference-loss ops themselves: opcheck, gradcheck, torch.compile, arguments.

The losses' values, metrics and gradients against the plain-PyTorch twins and TRL are tested in
tests/losses/.
"""

from __future__ import annotations

import math

import pytest
import torch

from pyalign import ops
from pyalign.losses import GRPO_LOSS_TYPES, PreferenceLogps, dpo_loss, grpo_loss, orpo_loss
from pyalign.ops import reference


@pytest.fixture(scope="module", autouse=True)
def native_backend() -> str:
    return ops.load_native_ops()


def dpo_arguments(loss_type="sigmoid", dtype=torch.float64, requires_grad=True, num_pairs=6):
    def sums():
        return (-torch.rand(num_pairs, dtype=dtype) * 20).requires_grad_(requires_grad)

    with_reference = loss_type not in ("simpo", "cpo")
    return (
        sums(),
        sums(),
        sums() if with_reference else None,
        sums() if with_reference else None,
        torch.randint(0, 9, (num_pairs,)),
        torch.randint(1, 9, (num_pairs,)),
        loss_type,
        0.3,
        0.1 if loss_type in ("sigmoid", "robust", "simpo", "cpo") else 0.0,
        0.4,
    )


def kto_arguments(dtype=torch.float64, requires_grad=True, num_rows=7):
    return (
        (-torch.rand(num_rows, dtype=dtype) * 20).requires_grad_(requires_grad),
        (-torch.rand(num_rows, dtype=dtype) * 20).requires_grad_(requires_grad),
        torch.tensor([True, False, True, True, False, False, True])[:num_rows],
        torch.tensor(0.4, dtype=dtype).requires_grad_(requires_grad),
        0.2,
        1.3,
        0.7,
    )


def orpo_arguments(dtype=torch.float64, requires_grad=True, num_pairs=5):
    return (
        (-torch.rand(num_pairs, dtype=dtype) * 20).requires_grad_(requires_grad),
        (-torch.rand(num_pairs, dtype=dtype) * 20).requires_grad_(requires_grad),
        torch.randint(0, 9, (num_pairs,)),
        torch.randint(1, 9, (num_pairs,)),
        0.2,
    )


def grpo_arguments(dtype=torch.float64, requires_grad=True, with_old=True, shape=(3, 5)):
    logps = -torch.rand(shape, dtype=dtype) * 2

    def near(tensor):
        return (tensor + 0.3 * torch.randn(shape, dtype=dtype)).requires_grad_(requires_grad)

    mask = torch.rand(shape) > 0.2
    mask[1] = False
    return (
        logps.clone().requires_grad_(requires_grad),
        near(logps) if with_old else None,
        near(logps),
        torch.tensor([1.0, -0.5, 0.0], dtype=dtype)[: shape[0]].requires_grad_(requires_grad),
        mask,
        0.05,
        0.2,
        0.28,
    )


LOSS_TYPES = ["sigmoid", "robust", "hinge", "ipo", "simpo", "cpo"]


# opcheck


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_opcheck_dpo(loss_type):
    torch.library.opcheck(torch.ops.pyalign.dpo_loss.default, dpo_arguments(loss_type))


@pytest.mark.parametrize("loss_type", ["sigmoid", "simpo"])
def test_opcheck_dpo_backward(loss_type):
    arguments = dpo_arguments(loss_type, requires_grad=False)
    torch.library.opcheck(
        torch.ops.pyalign.dpo_loss_backward.default,
        (torch.randn(6, dtype=torch.float64), *arguments),
    )


def test_opcheck_kto():
    torch.library.opcheck(torch.ops.pyalign.kto_loss.default, kto_arguments())
    arguments = kto_arguments(requires_grad=False)
    torch.library.opcheck(
        torch.ops.pyalign.kto_loss_backward.default,
        (torch.randn(7, dtype=torch.float64), *arguments),
    )


def test_opcheck_orpo():
    torch.library.opcheck(torch.ops.pyalign.orpo_loss.default, orpo_arguments())
    arguments = orpo_arguments(requires_grad=False)
    torch.library.opcheck(
        torch.ops.pyalign.orpo_loss_backward.default,
        (torch.randn(5, dtype=torch.float64), *arguments),
    )


@pytest.mark.parametrize("with_old", [True, False], ids=["old", "no-old"])
def test_opcheck_grpo(with_old):
    torch.library.opcheck(torch.ops.pyalign.grpo_loss.default, grpo_arguments(with_old=with_old))
    arguments = grpo_arguments(requires_grad=False, with_old=with_old)
    grad = torch.randn(3, 5, dtype=torch.float64)
    torch.library.opcheck(torch.ops.pyalign.grpo_loss_backward.default, (grad, *arguments))


# gradcheck on float64


def _differentiable(arguments):
    return [
        argument
        for argument in arguments
        if isinstance(argument, torch.Tensor) and argument.requires_grad
    ]


def _gradcheck(op, arguments):
    inputs = _differentiable(arguments)
    positions = [
        index
        for index, argument in enumerate(arguments)
        if isinstance(argument, torch.Tensor) and argument.requires_grad
    ]

    def losses(*values):
        replaced = list(arguments)
        for index, value in zip(positions, values):
            replaced[index] = value
        return op(*replaced)[0]

    assert torch.autograd.gradcheck(losses, inputs)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradcheck_dpo(loss_type):
    _gradcheck(torch.ops.pyalign.dpo_loss, dpo_arguments(loss_type))


def test_gradcheck_kto():
    _gradcheck(torch.ops.pyalign.kto_loss, kto_arguments())


def test_gradcheck_orpo():
    _gradcheck(torch.ops.pyalign.orpo_loss, orpo_arguments())


def test_gradcheck_grpo():
    # Without old_logps the op treats old as logp.detach(): the ratio is 1 in value but has
    # gradient 1, which no finite difference can see, so gradcheck runs with old_logps only (the
    # comparison with the twin covers the other case). The fixed seed keeps the ratios away
    # from the clip bounds, where finite differences would straddle the kink.
    _gradcheck(torch.ops.pyalign.grpo_loss, grpo_arguments(with_old=True))


# torch.compile


def _all_losses(dpo, kto, orpo, grpo):
    total = torch.ops.pyalign.dpo_loss(*dpo)[0].sum()
    total = total + torch.ops.pyalign.kto_loss(*kto)[0].sum()
    total = total + torch.ops.pyalign.orpo_loss(*orpo)[0].sum()
    return total + torch.ops.pyalign.grpo_loss(*grpo)[0].sum()


@pytest.mark.slow
def test_ops_run_inside_torch_compile():
    torch._dynamo.reset()
    arguments = (dpo_arguments(), kto_arguments(), orpo_arguments(), grpo_arguments())
    inputs = [tensor for group in arguments for tensor in _differentiable(group)]

    expected = _all_losses(*arguments)
    expected_grads = torch.autograd.grad(expected, inputs)
    compiled = torch.compile(_all_losses, fullgraph=True)
    value = compiled(*arguments)
    grads = torch.autograd.grad(value, inputs)

    torch.testing.assert_close(value, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)


# Arguments the C++ checks reject


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: torch.ops.pyalign.dpo_loss(*dpo_arguments()[:6], "kto", 0.1, 0.0, 0.5),
            ValueError,
            "unknown loss_type 'kto'",
        ),
        (
            lambda: torch.ops.pyalign.dpo_loss(*dpo_arguments()[:6], "sigmoid", 0.0, 0.0, 0.5),
            ValueError,
            "beta must be finite and greater than 0",
        ),
        (
            lambda: torch.ops.pyalign.dpo_loss(*dpo_arguments()[:6], "sigmoid", math.inf, 0.0, 0.5),
            ValueError,
            "beta must be finite and greater than 0, got inf",
        ),
        (
            lambda: torch.ops.pyalign.dpo_loss(
                *dpo_arguments()[:2], None, None, None, None, "sigmoid", 0.1, 0.0, 0.5
            ),
            ValueError,
            "needs reference_chosen and reference_rejected",
        ),
        (
            lambda: torch.ops.pyalign.dpo_loss(*dpo_arguments()[:6], "simpo", 0.1, 0.0, 0.5),
            ValueError,
            "is reference-free",
        ),
        (
            lambda: torch.ops.pyalign.dpo_loss(
                *dpo_arguments()[:4], None, None, "ipo", 0.1, 0.0, 0.5
            ),
            ValueError,
            "needs chosen_tokens and rejected_tokens",
        ),
        (
            lambda: torch.ops.pyalign.dpo_loss(
                torch.zeros(3), torch.zeros(4), None, None, None, None, "cpo", 0.1, 0.0, 0.5
            ),
            ValueError,
            r"rejected must have shape \(P,\) = \[3\], got \[4\]",
        ),
        (
            lambda: torch.ops.pyalign.kto_loss(
                torch.zeros(3), torch.zeros(3), torch.ones(3), torch.tensor(0.0), 0.1, 1.0, 1.0
            ),
            TypeError,
            "labels must be bool, got float32",
        ),
        (
            lambda: torch.ops.pyalign.orpo_loss(
                torch.zeros(3, dtype=torch.int64), torch.zeros(3), torch.ones(3), torch.ones(3), 0.1
            ),
            TypeError,
            "chosen must be float16, bfloat16, float32 or float64, got int64",
        ),
        (
            lambda: torch.ops.pyalign.grpo_loss(
                torch.zeros(2, 3),
                None,
                None,
                torch.zeros(3),
                torch.ones(2, 3, dtype=torch.bool),
                0.0,
                0.2,
                0.2,
            ),
            ValueError,
            r"advantages must have shape \(B,\) = \[2\], got \[3\]",
        ),
        (
            lambda: torch.ops.pyalign.grpo_loss(
                torch.zeros(2, 3),
                None,
                None,
                torch.zeros(2),
                torch.ones(2, 3, dtype=torch.bool),
                0.0,
                1.5,
                0.2,
            ),
            ValueError,
            r"epsilon_low must be in \(0, 1\), got 1.5",
        ),
    ],
    ids=[
        "dpo-loss-type",
        "dpo-beta",
        "dpo-beta-infinite",
        "dpo-missing-reference",
        "dpo-reference-free",
        "dpo-missing-tokens",
        "dpo-shape",
        "kto-labels",
        "orpo-dtype",
        "grpo-advantages",
        "grpo-epsilon",
    ],
)
def test_ops_reject_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backward_rejects_bad_gradient_shape():
    arguments = orpo_arguments(requires_grad=False)
    with pytest.raises(ValueError, match=r"incoming gradient must have the output's shape \[5\]"):
        torch.ops.pyalign.orpo_loss_backward(torch.zeros(4, dtype=torch.float64), *arguments)


def test_outputs_are_float32_for_low_precision_inputs():
    arguments = list(orpo_arguments(dtype=torch.bfloat16, requires_grad=False))
    losses, log_odds = torch.ops.pyalign.orpo_loss(*arguments)
    twin_losses, _ = reference.orpo_pair_losses(*arguments)
    assert losses.dtype == torch.float32
    assert log_odds.dtype == torch.float32
    torch.testing.assert_close(losses, twin_losses)


# Double backward, devices, bounds and overflow


def _first_input_gradient(op, arguments):
    losses = op(*arguments)[0]
    first = arguments[0]
    (grad,) = torch.autograd.grad(losses.sum(), first, create_graph=True)
    return grad


@pytest.mark.parametrize(
    ("op_name", "arguments"),
    [
        ("dpo_loss", dpo_arguments),
        ("kto_loss", kto_arguments),
        ("orpo_loss", orpo_arguments),
        ("grpo_loss", grpo_arguments),
    ],
)
def test_double_backward_raises(op_name, arguments):
    op = getattr(torch.ops.pyalign, op_name)
    grad = _first_input_gradient(op, arguments())

    with pytest.raises(ops.DoubleBackwardError, match=f"pyalign::{op_name}_backward"):
        grad.pow(2).sum().backward()


def test_mixed_meta_device_raises():
    arguments = list(dpo_arguments(requires_grad=False))
    arguments[1] = torch.empty(arguments[1].shape, dtype=arguments[1].dtype, device="meta")

    with pytest.raises(ValueError, match="chosen on cpu, rejected on meta"):
        torch.ops.pyalign.dpo_loss(*arguments)


def _grads_by_implementation(compute):
    """Run compute(implementation) -> (loss, inputs) for both; return the input gradients."""
    grads = {}
    for implementation in ops.IMPLEMENTATIONS:
        loss, inputs = compute(implementation)
        grads[implementation] = torch.autograd.grad(loss, inputs)
    return grads


def test_grpo_kl_exponent_at_its_cap():
    # ref - logp exactly at the cap of 20: the gradient passes in both implementations.
    def compute(implementation):
        logps = torch.zeros(1, 1, requires_grad=True)
        loss, _ = grpo_loss(
            logps,
            None,
            torch.full((1, 1), reference.GRPO_KL_MAX_EXPONENT),
            torch.zeros(1),
            torch.ones(1, 1, dtype=torch.bool),
            beta=0.04,
            implementation=implementation,
        )
        return loss, [logps]

    grads = _grads_by_implementation(compute)

    expected = -0.04 * (math.exp(reference.GRPO_KL_MAX_EXPONENT) - 1)
    for grad in grads.values():
        torch.testing.assert_close(grad[0], torch.full((1, 1), expected))


def test_orpo_average_at_its_cap():
    def compute(implementation):
        chosen = torch.tensor([reference.ORPO_MAX_AVERAGE_LOGP], requires_grad=True)
        policy = PreferenceLogps(chosen, torch.tensor([-2.0]), torch.tensor([1]), torch.tensor([1]))
        loss, _ = orpo_loss(policy, 0.1, implementation=implementation)
        return loss, [chosen]

    grads = _grads_by_implementation(compute)

    torch.testing.assert_close(grads["native"][0], grads["torch"][0])
    # The NLL term alone would give -1; the odds-ratio term passes at the bound and adds to it.
    assert grads["native"][0].item() < -1.001


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_grpo_ratio_at_the_clip_bound(advantage):
    # c = 1 + epsilon (or 1 - epsilon) exactly: a tie between the clipped and unclipped terms,
    # whose gradients add up to the unclipped one.
    epsilon = 0.25  # 1.25 and 0.75 are exact in float32, and so are their logarithms' exps here
    ratio = 1 + epsilon if advantage > 0 else 1 - epsilon

    def compute(implementation):
        log_ratio = torch.full((1, 1), math.log(ratio), requires_grad=True)
        loss, _ = grpo_loss(
            log_ratio,
            torch.zeros(1, 1),
            None,
            torch.tensor([advantage]),
            torch.ones(1, 1, dtype=torch.bool),
            beta=0.0,
            epsilon=epsilon,
            implementation=implementation,
        )
        return loss, [log_ratio]

    grads = _grads_by_implementation(compute)

    torch.testing.assert_close(grads["native"][0], grads["torch"][0])


@pytest.mark.parametrize("implementation", ops.IMPLEMENTATIONS)
def test_grpo_overflowing_ratio_clipped(implementation):
    # logp - old = 100 overflows exp in float32; with A > 0 the clip binds, so the loss is
    # -(1 + epsilon) A and no gradient reaches logp.
    logps = torch.zeros(1, 2, requires_grad=True)
    advantages = torch.tensor([1.0], requires_grad=True)

    loss, _ = grpo_loss(
        logps,
        torch.full((1, 2), -100.0),
        None,
        advantages,
        torch.ones(1, 2, dtype=torch.bool),
        beta=0.0,
        implementation=implementation,
    )
    loss.backward()

    torch.testing.assert_close(loss.detach(), torch.tensor(-1.2))
    torch.testing.assert_close(logps.grad, torch.zeros(1, 2))
    torch.testing.assert_close(advantages.grad, torch.tensor([-1.2]))


@pytest.mark.parametrize("implementation", ops.IMPLEMENTATIONS)
def test_empty_batches(implementation):
    empty = torch.zeros(0, requires_grad=True)
    no_tokens = torch.zeros(0, dtype=torch.long)
    pairs = PreferenceLogps(empty, empty, no_tokens, no_tokens)

    with pytest.raises(ValueError, match="DPO needs at least one chosen/rejected pair"):
        dpo_loss(pairs, pairs, 0.1, implementation=implementation)
    with pytest.raises(ValueError, match="ORPO needs at least one chosen/rejected pair"):
        orpo_loss(pairs, 0.1, implementation=implementation)
    for loss_type in GRPO_LOSS_TYPES:
        for shape in ((0, 3), (2, 0)):
            logps = torch.zeros(shape, requires_grad=True)
            loss, _ = grpo_loss(
                logps,
                None,
                None,
                torch.zeros(shape[0]),
                torch.ones(shape, dtype=torch.bool),
                beta=0.0,
                loss_type=loss_type,
                implementation=implementation,
            )
            assert loss.item() == 0, (loss_type, shape)
