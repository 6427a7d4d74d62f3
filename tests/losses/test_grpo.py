"""Tests of pyalign.losses.grpo_loss."""

import math

import pytest
import torch

from pyalign.losses import GRPO_LOSS_TYPES, GRPOLoss, grpo_loss
from tests.losses.compare import (
    DTYPE_IDS,
    DTYPES,
    assert_all_finite,
    assert_metrics_match,
    implementations_agree,
)

# An odd shape, with one completion wholly masked.
B, T = 5, 47
MASKED_SEQUENCE = 3


def random_batch(dtype, with_old=True, with_reference=True):
    """Return (logps, old_logps, ref_logps, advantages, completion_mask), with gradients."""
    logps = -torch.rand(B, T, dtype=torch.float64) * 4  # (B, T)
    old = logps + 0.3 * torch.randn(B, T, dtype=torch.float64) if with_old else None
    reference = logps + 0.5 * torch.randn(B, T, dtype=torch.float64) if with_reference else None
    advantages = torch.tensor([1.5, -0.7, 0.0, 2.0, -1.0], dtype=torch.float64)
    mask = torch.rand(B, T) > 0.3
    mask[MASKED_SEQUENCE] = False

    def leaf(tensor):
        return None if tensor is None else tensor.to(dtype).requires_grad_(True)

    return leaf(logps), leaf(old), leaf(reference), leaf(advantages), mask


def test_hand_derived():
    # beta = 0, epsilon = 0.2. Completion 1 (A = 1) has ratios 1.5 (above 1.2, so clipped:
    # -1.2, no gradient) and 1 (-1, gradient -A c = -1). Completion 2 (A = -2) has ratio 0.5
    # (below 0.8 with A < 0: -min(-1, -1.6) = 1.6, clipped) and a masked token.
    # grpo: mean(( -1.2 - 1) / 2, 1.6 / 1) = 0.25; bnpo: (-1.2 - 1 + 1.6) / 3 = -0.2;
    # dr_grpo with max_completion_length 4: -0.6 / (2 * 4) = -0.075.
    old = torch.zeros(2, 2, dtype=torch.float64)
    logps = torch.tensor([[math.log(1.5), 0.0], [math.log(0.5), 0.0]], dtype=torch.float64)
    logps.requires_grad_(True)
    advantages = torch.tensor([1.0, -2.0], dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False]])

    expected = {"grpo": 0.25, "bnpo": -0.2, "dr_grpo": -0.075}
    for loss_type, value in expected.items():
        loss, metrics = grpo_loss(
            logps,
            old,
            None,
            advantages,
            mask,
            beta=0.0,
            loss_type=loss_type,
            max_completion_length=4,
        )
        assert loss.item() == pytest.approx(value, abs=1e-12), loss_type

    loss, metrics = grpo_loss(logps, old, None, advantages, mask, beta=0.0)
    (grad,) = torch.autograd.grad(loss, [logps])
    # Only the unclipped token has a gradient: -1, scaled by 1 / (2 tokens * 2 completions).
    torch.testing.assert_close(grad, torch.tensor([[0.0, -0.25], [0.0, 0.0]], dtype=torch.float64))
    assert metrics["clip_ratio/low_mean"].item() == pytest.approx(1 / 3)
    assert metrics["clip_ratio/high_mean"].item() == pytest.approx(1 / 3)
    assert metrics["clip_ratio/region_mean"].item() == pytest.approx(2 / 3)
    assert metrics["clip_ratio/low_min"].item() == 0.0
    assert metrics["clip_ratio/high_max"].item() == pytest.approx(0.5)
    assert "kl" not in metrics


def test_kl_hand_derived():
    # One token with ref - logp = log 2 and ratio 1 (old = None), A = 0: the surrogate is 0 and
    # k3 = 2 - log 2 - 1. With beta = 0.1 the loss is 0.1 (1 - log 2), and d loss / d logp =
    # -beta (e^d - 1) = -0.1.
    logps = torch.tensor([[-1.0]], dtype=torch.float64, requires_grad=True)
    reference = torch.tensor([[-1.0 + math.log(2)]], dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss, metrics = grpo_loss(
        logps, None, reference, torch.zeros(1, dtype=torch.float64), mask, beta=0.1
    )
    (grad,) = torch.autograd.grad(loss, [logps])

    assert loss.item() == pytest.approx(0.1 * (1 - math.log(2)), abs=1e-12)
    assert metrics["kl"].item() == pytest.approx(1 - math.log(2), abs=1e-7)
    assert grad.item() == pytest.approx(-0.1, abs=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
@pytest.mark.parametrize("with_old", [True, False], ids=["old", "no-old"])
def test_op_matches_twin(loss_type, with_old, dtype):
    logps, old, reference, advantages, mask = random_batch(dtype, with_old=with_old)
    inputs = [tensor for tensor in (logps, old, reference, advantages) if tensor is not None]

    def run(implementation):
        return grpo_loss(
            logps,
            old,
            reference,
            advantages,
            mask,
            beta=0.05,
            epsilon=0.2,
            epsilon_high=0.28,
            loss_type=loss_type,
            max_completion_length=64,
            implementation=implementation,
        )

    loss, metrics, grads = implementations_agree(run, inputs, dtype)
    assert_all_finite(loss, metrics, grads)
    assert "kl" in metrics


def test_op_matches_twin_without_reference():
    logps, old, _, advantages, mask = random_batch(torch.float64, with_reference=False)

    def run(implementation):
        return grpo_loss(
            logps, old, None, advantages, mask, beta=0.0, implementation=implementation
        )

    _, metrics, _ = implementations_agree(run, [logps, old, advantages], torch.float64)
    assert "kl" not in metrics


@pytest.mark.parametrize("implementation", ["native", "torch"])
def test_masked_positions_cannot_poison(implementation):
    # Padding may hold any value; neither the loss nor a gradient may turn NaN because of it.
    logps, old, reference, advantages, mask = random_batch(torch.float32)
    garbage = torch.full((B, T), float("inf"))
    logps = torch.where(mask, logps.detach(), -garbage).requires_grad_(True)
    old = torch.where(mask, old.detach(), garbage)
    reference = torch.where(mask, reference.detach(), float("nan"))
    loss, metrics = grpo_loss(
        logps, old, reference, advantages, mask, beta=0.1, implementation=implementation
    )
    (grad,) = torch.autograd.grad(loss, [logps])

    assert_all_finite(loss, metrics, [grad])
    assert torch.count_nonzero(grad[~mask]) == 0


@pytest.mark.parametrize("implementation", ["native", "torch"])
def test_wholly_masked_batch(implementation):
    logps, old, reference, advantages, mask = random_batch(torch.float32)
    mask[:] = False
    for loss_type in GRPO_LOSS_TYPES:
        loss, metrics = grpo_loss(
            logps,
            old,
            reference,
            advantages,
            mask,
            beta=0.1,
            loss_type=loss_type,
            implementation=implementation,
        )
        grads = torch.autograd.grad(loss, [logps, advantages])
        assert_all_finite(loss, metrics, grads)
        assert loss.item() == 0.0
        assert "clip_ratio/low_min" not in metrics


@pytest.mark.parametrize("implementation", ["native", "torch"])
def test_large_kl_exponent_stays_finite(implementation):
    logps = torch.full((1, 3), -200.0, requires_grad=True)
    reference = torch.zeros(1, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, metrics = grpo_loss(
        logps, None, reference, torch.ones(1), mask, beta=0.1, implementation=implementation
    )
    (grad,) = torch.autograd.grad(loss, [logps])
    assert_all_finite(loss, metrics, [grad])


GRPO_METRICS = [
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "clip_ratio/region_mean",
    "clip_ratio/low_min",
    "clip_ratio/high_max",
]


@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
@pytest.mark.parametrize(
    ("beta", "with_old", "epsilon_high"),
    [(0.04, True, 0.28), (0.0, True, None), (0.1, False, None)],
    ids=["kl-clip-higher", "no-kl", "no-old"],
)
def test_matches_trl_grpo_trainer(loss_type, beta, with_old, epsilon_high):
    from tests.losses import trl_harness

    logps, old, reference, advantages, mask = random_batch(torch.float64, with_old=with_old)
    mask[MASKED_SEQUENCE, :3] = True  # TRL's per-sequence clip ratios need tokens everywhere
    num_items = int(mask.sum()) + 11  # as if the generation batch were larger than this one
    arguments = dict(
        beta=beta,
        epsilon=0.2,
        epsilon_high=epsilon_high,
        loss_type=loss_type,
        max_completion_length=60,
    )

    trl_logps = logps.detach().clone().requires_grad_(True)
    trl_loss, trl_metrics = trl_harness.grpo_loss(
        trl_logps,
        None if old is None else old.detach(),
        reference.detach(),
        advantages.detach(),
        mask,
        num_items_in_batch=torch.tensor(num_items),
        **arguments,
    )
    (trl_grad,) = torch.autograd.grad(trl_loss, [trl_logps])

    loss, metrics = grpo_loss(
        logps, old, reference, advantages, mask, num_items_in_batch=num_items, **arguments
    )
    (grad,) = torch.autograd.grad(loss, [logps])

    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-10, rel=1e-10)
    names = GRPO_METRICS + (["kl"] if beta > 0 else [])
    assert_metrics_match(metrics, trl_metrics, names, tolerance=1e-6)
    torch.testing.assert_close(grad[mask], trl_grad[mask], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"loss_type": "ppo"}, "unknown GRPO loss_type 'ppo'"),
        ({"beta": -0.1}, "GRPO beta must be finite and at least 0"),
        ({"beta": float("inf")}, "GRPO beta must be finite and at least 0, got inf"),
        ({"epsilon": 0.0}, r"epsilon must be in \(0, 1\)"),
        ({"epsilon_high": 0.0}, "epsilon_high must be finite and greater than 0"),
        ({"max_completion_length": 0}, "max_completion_length must be a positive int"),
        ({"implementation": "cuda"}, "implementation must be one of"),
    ],
    ids=[
        "loss-type",
        "beta",
        "beta-infinite",
        "epsilon",
        "epsilon-high",
        "max-length",
        "implementation",
    ],
)
def test_module_rejects_bad_hyperparameters(arguments, message):
    with pytest.raises(ValueError, match=message):
        GRPOLoss(**arguments)


def test_beta_needs_reference():
    logps, old, _, advantages, mask = random_batch(torch.float32, with_reference=False)
    with pytest.raises(ValueError, match="ref_logps is needed"):
        grpo_loss(logps, old, None, advantages, mask, beta=0.1)


def test_mask_must_be_bool():
    logps, old, reference, advantages, mask = random_batch(torch.float32)
    with pytest.raises(TypeError, match="completion_mask must be bool"):
        grpo_loss(logps, old, reference, advantages, mask.long(), beta=0.1)


def test_config_lists_the_same_loss_types():
    # The config module keeps its own copy so that validating a config does not import torch.
    from pyalign import config

    assert tuple(config.GRPO_LOSS_TYPES) == GRPO_LOSS_TYPES
