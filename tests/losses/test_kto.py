"""Tests of pyalign.losses.kto_loss and kto_kl."""

import math

import pytest
import torch

from pyalign.losses import KTOLoss, kto_kl, kto_loss
from tests.losses.compare import (
    DTYPE_IDS,
    DTYPES,
    assert_all_finite,
    assert_metrics_match,
    implementations_agree,
)


def random_rows(num_rows, dtype):
    policy = (-torch.rand(num_rows, dtype=torch.float64) * 40).to(dtype).requires_grad_(True)
    reference = (-torch.rand(num_rows, dtype=torch.float64) * 40).to(dtype).requires_grad_(True)
    labels = torch.rand(num_rows) > 0.4
    labels[:2] = torch.tensor([True, False])  # both classes present
    return policy, reference, labels


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_hand_derived():
    # beta = 0.5, kl = 1. Row 1 is desirable with r = -1 - -4 = 3: loss w_D (1 - sigmoid(1)).
    # Row 2 is undesirable with r = -5 - -4 = -1: loss w_U (1 - sigmoid(0.5 * (1 - -1))) =
    # w_U (1 - sigmoid(1)). With w_D = 2 and w_U = 1 the mean is 1.5 (1 - sigmoid(1)).
    # d loss / d kl = [beta w_D s(1 - s) - beta w_U s(1 - s)] / 2 = 0.25 s(1 - s) with
    # s = sigmoid(1): a larger reference point lowers the desirable row's margin.
    policy = torch.tensor([-1.0, -5.0], dtype=torch.float64, requires_grad=True)
    reference = torch.tensor([-4.0, -4.0], dtype=torch.float64)
    kl = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([True, False])
    loss, metrics = kto_loss(policy, reference, labels, kl, beta=0.5, desirable_weight=2.0)
    (grad_kl,) = torch.autograd.grad(loss, [kl])

    s = sigmoid(1.0)
    assert loss.item() == pytest.approx(1.5 * (1 - s), abs=1e-12)
    assert grad_kl.item() == pytest.approx(0.25 * s * (1 - s), abs=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(1.5, abs=1e-12)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.5, abs=1e-12)
    assert metrics["rewards/margins"].item() == pytest.approx(2.0, abs=1e-12)
    assert metrics["logps/chosen"].item() == pytest.approx(-1.0, abs=1e-12)
    assert metrics["count/chosen"].item() == 1
    assert metrics["kl"].item() == 1.0


def test_kl_hand_derived():
    # mean(policy - reference) = mean(2, -1, 5) = 2; a negative mean is clamped to 0.
    policy = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert kto_kl(policy, torch.tensor([-1.0, 3.0, -2.0])).item() == pytest.approx(2.0)
    assert kto_kl(policy, torch.tensor([5.0, 5.0, 5.0])).item() == 0.0
    assert not kto_kl(policy, torch.zeros(3)).requires_grad
    assert kto_kl(torch.zeros(0), torch.zeros(0)).item() == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_op_matches_twin(dtype):
    policy, reference, labels = random_rows(41, dtype)
    kl = torch.tensor(0.7, dtype=dtype, requires_grad=True)

    def run(implementation):
        return kto_loss(policy, reference, labels, kl, 0.3, 1.3, 0.8, implementation=implementation)

    loss, metrics, grads = implementations_agree(run, [policy, reference, kl], dtype)
    assert_all_finite(loss, metrics, grads)


@pytest.mark.parametrize("present", [True, False], ids=["desirable-only", "undesirable-only"])
def test_absent_class_is_omitted(present):
    policy, reference, _ = random_rows(5, torch.float32)
    labels = torch.full((5,), present)
    loss, metrics = kto_loss(policy, reference, labels, torch.tensor(0.1), beta=0.1)

    present_name, absent_name = ("chosen", "rejected") if present else ("rejected", "chosen")
    assert f"rewards/{present_name}" in metrics
    assert f"rewards/{absent_name}" not in metrics
    assert f"logps/{absent_name}" not in metrics
    assert "rewards/margins" not in metrics
    assert metrics[f"count/{absent_name}"].item() == 0
    assert_all_finite(loss, metrics, [])


def test_empty_batch_is_zero():
    empty = torch.zeros(0, requires_grad=True)
    loss, metrics = kto_loss(
        empty, torch.zeros(0), torch.zeros(0, dtype=torch.bool), torch.tensor(0.0), beta=0.1
    )
    assert loss.item() == 0.0
    assert_all_finite(loss, metrics, [])


def test_matches_trl_kto_trainer():
    from tests.losses import trl_harness

    num_rows, length = 9, 8
    completion_mask = (torch.rand(num_rows, length) > 0.3).long()
    completion_mask[:, 1] = 1
    shifted = completion_mask[:, 1:].bool()
    per_token = -torch.rand(num_rows, length - 1, dtype=torch.float64) * 3
    per_token = torch.where(shifted, per_token, torch.zeros_like(per_token))
    labels = torch.tensor([True, False, True, True, False, False, True, False, True])
    ref_logps = -torch.rand(num_rows, dtype=torch.float64) * 10
    kl_logps = -torch.rand(num_rows, dtype=torch.float64) * 10
    ref_kl_logps = kl_logps - torch.rand(num_rows, dtype=torch.float64)  # positive KL

    trl_leaf = per_token.clone().requires_grad_(True)
    trl_loss, trl_metrics = trl_harness.kto_loss(
        trl_leaf,
        completion_mask,
        labels,
        ref_logps,
        kl_logps,
        ref_kl_logps,
        beta=0.2,
        desirable_weight=1.4,
        undesirable_weight=0.6,
    )
    (trl_grad,) = torch.autograd.grad(trl_loss, [trl_leaf])

    leaf = per_token.clone().requires_grad_(True)
    kl = kto_kl(kl_logps, ref_kl_logps)
    loss, metrics = kto_loss(leaf.sum(dim=1), ref_logps, labels, kl, 0.2, 1.4, 0.6)
    (grad,) = torch.autograd.grad(loss, [leaf])

    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-10, rel=1e-10)
    names = [
        "kl",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    ]
    assert_metrics_match(metrics, trl_metrics, names, tolerance=1e-7)
    torch.testing.assert_close(grad[shifted], trl_grad[shifted], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"beta": 0.0}, "KTO beta must be finite and greater than 0"),
        ({"desirable_weight": float("inf")}, "desirable_weight must be finite"),
        ({"desirable_weight": 0.0}, "desirable_weight must be finite and greater than 0"),
        ({"undesirable_weight": -1.0}, "undesirable_weight must be finite and greater than 0"),
        ({"implementation": "cuda"}, "implementation must be one of"),
    ],
    ids=[
        "beta",
        "desirable-weight-infinite",
        "desirable-weight",
        "undesirable-weight",
        "implementation",
    ],
)
def test_module_rejects_bad_hyperparameters(arguments, message):
    with pytest.raises(ValueError, match=message):
        KTOLoss(**arguments)


def test_labels_must_be_bool():
    policy, reference, _ = random_rows(3, torch.float32)
    with pytest.raises(TypeError, match="labels must be bool"):
        kto_loss(policy, reference, torch.ones(3), torch.tensor(0.0), beta=0.1)


def test_kl_must_be_one_element():
    policy, reference, labels = random_rows(3, torch.float32)
    with pytest.raises(ValueError, match="kl must be a tensor with one element"):
        kto_loss(policy, reference, labels, torch.zeros(3), beta=0.1)
