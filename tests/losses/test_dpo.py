import math

import pytest
import torch

from pyalign.losses import DPOLoss, PreferenceLogps, dpo_loss


def test_dpo_sigmoid_hand_derived():
    # beta = 0.5. Pair 1: r_c = 0.5 * (-1 - -2) = 0.5, r_r = 0.5 * (-3 - -2) = -0.5, margin 1,
    # loss log(1 + e^-1). Pair 2: r_c = 0.5 * (-4 - -3) = -0.5, r_r = 0.5 * (-2 - -3) = 0.5,
    # margin -1, loss log(1 + e). Pair 3 is a tie: margin 0, loss log 2, counted as not correct.
    policy = PreferenceLogps(
        chosen=torch.tensor([-1.0, -4.0, -5.0]), rejected=torch.tensor([-3.0, -2.0, -6.0])
    )
    reference = PreferenceLogps(
        chosen=torch.tensor([-2.0, -3.0, -5.0]), rejected=torch.tensor([-2.0, -3.0, -6.0])
    )
    loss, metrics = dpo_loss(policy, reference, beta=0.5)

    expected_loss = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1)) + math.log(2)) / 3
    assert loss.item() == pytest.approx(expected_loss, abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.0, abs=1e-6)
    assert metrics["rewards/rejected"].item() == pytest.approx(0.0, abs=1e-6)
    assert metrics["rewards/margins"].item() == pytest.approx(0.0, abs=1e-6)
    assert metrics["rewards/accuracies"].item() == pytest.approx(1 / 3, abs=1e-6)
    assert metrics["logps/chosen"].item() == pytest.approx(-10 / 3, abs=1e-6)
    assert metrics["logps/rejected"].item() == pytest.approx(-11 / 3, abs=1e-6)


def test_dpo_gradient_hand_derived():
    # d loss / d pi_c = -beta * sigmoid(-margin) / P; for one pair with margin 0 that is -beta/2.
    chosen = torch.tensor([-2.0], requires_grad=True)
    rejected = torch.tensor([-2.0], requires_grad=True)
    reference = PreferenceLogps(chosen=torch.tensor([-2.0]), rejected=torch.tensor([-2.0]))
    loss, _ = dpo_loss(PreferenceLogps(chosen, rejected), reference, beta=0.2)
    loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.1, abs=1e-7)
    assert rejected.grad.item() == pytest.approx(0.1, abs=1e-7)


def test_dpo_metrics_are_detached():
    chosen = torch.tensor([-1.0, -2.0], requires_grad=True)
    rejected = torch.tensor([-3.0, -1.0], requires_grad=True)
    reference = PreferenceLogps(chosen=torch.zeros(2), rejected=torch.zeros(2))
    _, metrics = dpo_loss(PreferenceLogps(chosen, rejected), reference, beta=0.1)
    for name, value in metrics.items():
        assert not value.requires_grad, name


def test_from_concatenated_splits_chosen_first():
    logps = PreferenceLogps.from_concatenated(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert logps.chosen.tolist() == [1.0, 2.0]
    assert logps.rejected.tolist() == [3.0, 4.0]


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_dpo_module_rejects_bad_beta(beta):
    with pytest.raises(ValueError, match="beta must be greater than 0"):
        DPOLoss(beta=beta)


def test_dpo_module_rejects_unknown_loss_type():
    with pytest.raises(ValueError, match="unknown DPO loss_type 'kto'"):
        DPOLoss(loss_type="kto")
