"""Tests of pyalign.losses.orpo_loss."""

import math

import pytest
import torch

from pyalign.losses import ORPOLoss, PreferenceLogps, orpo_loss
from tests.losses.compare import (
    DTYPE_IDS,
    DTYPES,
    assert_all_finite,
    assert_metrics_match,
    implementations_agree,
)


def random_policy(num_pairs, dtype):
    tokens = torch.randint(0, 30, (2, num_pairs))
    tokens[:, 0] = 0

    def sums():
        values = -torch.rand(num_pairs, dtype=torch.float64) * 3 * tokens[0].clamp(min=1)
        return values.to(dtype).requires_grad_(True)

    return PreferenceLogps(sums(), sums(), tokens[0], tokens[1])


def test_hand_derived():
    # Averages a_c = log(1/2) (p = 1/2, odds 1) and a_r = log(1/5) (p = 1/5, odds 1/4), so the
    # log odds ratio is log 1 - log(1/4) = log 4 and L_OR = -log sigmoid(log 4) = log(5/4).
    # The NLL is -(2 log(1/2)) / 2 = log 2 (two chosen tokens). With beta = 0.5 the loss is
    # log 2 + 0.5 log(5/4).
    chosen = torch.tensor([2 * math.log(0.5)], dtype=torch.float64)
    rejected = torch.tensor([3 * math.log(0.2)], dtype=torch.float64)
    policy = PreferenceLogps(chosen, rejected, torch.tensor([2]), torch.tensor([3]))
    loss, metrics = orpo_loss(policy, beta=0.5)

    assert loss.item() == pytest.approx(math.log(2) + 0.5 * math.log(1.25), abs=1e-12)
    assert metrics["log_odds_chosen"].item() == pytest.approx(math.log(4), abs=1e-12)
    assert metrics["log_odds_ratio"].item() == pytest.approx(-math.log(1.25), abs=1e-12)
    assert metrics["nll_loss"].item() == pytest.approx(math.log(2), abs=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.5 * math.log(0.5), abs=1e-12)
    assert metrics["logps/rejected"].item() == pytest.approx(math.log(0.2), abs=1e-12)
    assert metrics["rewards/accuracies"].item() == 1.0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_op_matches_twin(dtype):
    policy = random_policy(43, dtype)

    def run(implementation):
        return orpo_loss(policy, beta=0.2, implementation=implementation)

    loss, metrics, grads = implementations_agree(run, [policy.chosen, policy.rejected], dtype)
    assert_all_finite(loss, metrics, grads)


@pytest.mark.parametrize("implementation", ["native", "torch"])
def test_logps_near_zero_stay_finite(implementation):
    # Sums of exactly 0 and slightly above 0 (rounding in a log-softmax can produce those) would
    # make log(1 - exp(a)) infinite or NaN without the clamp.
    chosen = torch.tensor([0.0, 1e-9, -1e-12, -3.0], requires_grad=True)
    rejected = torch.tensor([-2.0, 0.0, 2e-7, -1e-30], requires_grad=True)
    tokens = torch.tensor([4, 2, 1, 3])
    policy = PreferenceLogps(chosen, rejected, tokens, tokens)
    loss, metrics = orpo_loss(policy, beta=0.1, implementation=implementation)
    grads = torch.autograd.grad(loss, [chosen, rejected])
    assert_all_finite(loss, metrics, grads)


def test_matches_trl_orpo_trainer():
    from tests.losses import trl_harness

    policy = random_policy(7, torch.float64)
    policy.chosen_tokens[0] = 3  # TRL's averages have no empty responses
    policy.rejected_tokens[0] = 3
    loss, metrics = orpo_loss(policy, beta=0.25)

    nll = -policy.chosen.sum() / policy.chosen_tokens.sum()
    trl_loss, trl_metrics = trl_harness.orpo_loss(
        policy.chosen_mean(), policy.rejected_mean(), nll, beta=0.25
    )
    (grads, trl_grads) = [
        torch.autograd.grad(value, [policy.chosen, policy.rejected]) for value in (loss, trl_loss)
    ]

    # TRL's odds_ratio_loss casts the averages to float32, so the odds-ratio term, the rewards
    # and the gradient agree to float32 precision only.
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-6, rel=1e-6)
    names = [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "nll_loss",
        "log_odds_ratio",
        "log_odds_chosen",
    ]
    assert_metrics_match(metrics, trl_metrics, names, tolerance=1e-6)
    for grad, trl_grad in zip(grads, trl_grads):
        torch.testing.assert_close(grad, trl_grad.double(), atol=1e-7, rtol=1e-5)


def test_needs_token_counts():
    policy = random_policy(3, torch.float32)
    policy.rejected_tokens = None
    with pytest.raises(ValueError, match="ORPO needs the token counts"):
        orpo_loss(policy, beta=0.1)


@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_module_rejects_bad_beta(beta):
    with pytest.raises(ValueError, match="ORPO beta must be finite and greater than 0"):
        ORPOLoss(beta=beta)
