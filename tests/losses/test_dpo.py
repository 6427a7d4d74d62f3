"""Tests of pyalign.losses.dpo_loss: hand-derived values, the op against its twin, and TRL."""

import logging
import math

import pytest
import torch

from pyalign.losses import DPO_LOSS_TYPES, DPOLoss, PreferenceLogps, dpo_loss
from tests.losses.compare import (
    DTYPE_IDS,
    DTYPES,
    assert_all_finite,
    assert_metrics_match,
    implementations_agree,
)

REFERENCE_FREE = ("simpo", "cpo")
SMOOTHED = ("sigmoid", "robust", "simpo", "cpo")


def random_pairs(num_pairs, dtype, requires_grad=True):
    """Return (policy, reference) with summed logps, token counts (some 0) and gradients."""
    tokens = torch.randint(0, 40, (2, num_pairs))  # (2, P)
    tokens[:, 0] = 0  # an empty response on both sides of the first pair

    def sums():
        values = -torch.rand(num_pairs, dtype=torch.float64) * 2 * tokens[0].clamp(min=1)
        return values.to(dtype).requires_grad_(requires_grad)  # (P,)

    policy = PreferenceLogps(sums(), sums(), tokens[0], tokens[1])
    reference = PreferenceLogps(sums(), sums(), tokens[0], tokens[1])
    return policy, reference


# Hand-derived values


def test_sigmoid_hand_derived():
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


def test_sigmoid_gradient_hand_derived():
    # d loss / d pi_c = -beta * sigmoid(-margin) / P; for one pair with margin 0 that is -beta/2.
    chosen = torch.tensor([-2.0], requires_grad=True)
    rejected = torch.tensor([-2.0], requires_grad=True)
    reference = PreferenceLogps(chosen=torch.tensor([-2.0]), rejected=torch.tensor([-2.0]))
    loss, _ = dpo_loss(PreferenceLogps(chosen, rejected), reference, beta=0.2)
    loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.1, abs=1e-7)
    assert rejected.grad.item() == pytest.approx(0.1, abs=1e-7)


def _one_pair(chosen, rejected, chosen_tokens=1, rejected_tokens=1):
    return PreferenceLogps(
        torch.tensor([chosen], dtype=torch.float64, requires_grad=True),
        torch.tensor([rejected], dtype=torch.float64, requires_grad=True),
        torch.tensor([chosen_tokens]),
        torch.tensor([rejected_tokens]),
    )


def test_robust_hand_derived():
    # beta = 1, eps = 0.25, margin z = (-1 - -2) - (-3 - -2) = 2. The loss is
    # (-(0.75) log sigmoid(2) + 0.25 log sigmoid(-2)) / 0.5 = 1.5 softplus(-2) - 0.5 softplus(2).
    policy, reference = _one_pair(-1.0, -3.0), _one_pair(-2.0, -2.0)
    loss, _ = dpo_loss(policy, reference, beta=1.0, loss_type="robust", label_smoothing=0.25)

    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert loss.item() == pytest.approx(1.5 * softplus(-2) - 0.5 * softplus(2), abs=1e-12)


def test_conservative_sigmoid_hand_derived():
    # beta = 1, eps = 0.1, margin 2: 0.9 softplus(-2) + 0.1 softplus(2).
    policy, reference = _one_pair(-1.0, -3.0), _one_pair(-2.0, -2.0)
    loss, _ = dpo_loss(policy, reference, beta=1.0, label_smoothing=0.1)

    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert loss.item() == pytest.approx(0.9 * softplus(-2) + 0.1 * softplus(2), abs=1e-12)


def test_hinge_hand_derived():
    # beta = 0.25. Margin (-1 - -2) - (-3 - -2) = 2, so z = 0.5 and the loss is 1 - 0.5 = 0.5,
    # with d loss / d pi_c = -beta = -0.25 and d loss / d ref_c = 0.25.
    policy, reference = _one_pair(-1.0, -3.0), _one_pair(-2.0, -2.0)
    reference.chosen.requires_grad_(True)
    loss, _ = dpo_loss(policy, reference, beta=0.25, loss_type="hinge")
    grad_chosen, grad_reference = torch.autograd.grad(loss, [policy.chosen, reference.chosen])

    assert loss.item() == pytest.approx(0.5, abs=1e-12)
    assert grad_chosen.item() == pytest.approx(-0.25, abs=1e-12)
    assert grad_reference.item() == pytest.approx(0.25, abs=1e-12)


def test_ipo_hand_derived():
    # beta = 0.5. Log-ratios: chosen -2 - -4 = 2 over 4 tokens, rejected -6 - -3 = -3 over 2
    # tokens: u = 0.5 - -1.5 = 2, and the target 1 / (2 beta) = 1, so the loss is (2 - 1)^2 = 1
    # and d loss / d pi_c = 2 (u - 1) / 4 = 0.5. Rewards use the summed log-ratios: 1 and -1.5.
    policy = _one_pair(-2.0, -6.0, chosen_tokens=4, rejected_tokens=2)
    reference = _one_pair(-4.0, -3.0)
    loss, metrics = dpo_loss(policy, reference, beta=0.5, loss_type="ipo")
    (grad_chosen,) = torch.autograd.grad(loss, [policy.chosen])

    assert loss.item() == pytest.approx(1.0, abs=1e-12)
    assert grad_chosen.item() == pytest.approx(0.5, abs=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(1.0, abs=1e-12)
    assert metrics["rewards/rejected"].item() == pytest.approx(-1.5, abs=1e-12)


def test_simpo_hand_derived():
    # beta = 2, gamma = 0.5. Averages -4 / 4 = -1 and -6 / 3 = -2, so z = 2 * 1 - 0.5 = 1.5 and
    # the loss is softplus(-1.5). Rewards are beta * averages: -2 and -4.
    policy = _one_pair(-4.0, -6.0, chosen_tokens=4, rejected_tokens=3)
    loss, metrics = dpo_loss(policy, None, beta=2.0, loss_type="simpo", simpo_gamma=0.5)

    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(-2.0, abs=1e-12)
    assert metrics["rewards/rejected"].item() == pytest.approx(-4.0, abs=1e-12)
    assert metrics["logps/chosen"].item() == pytest.approx(-1.0, abs=1e-12)


def test_cpo_with_nll_hand_derived():
    # beta = 0.5, sums -4 and -6: z = 0.5 * 2 = 1, loss softplus(-1). With rpo_alpha = 2 and 4
    # chosen tokens, nll = 4 / 4 = 1, so the total is softplus(-1) + 2.
    policy = _one_pair(-4.0, -6.0, chosen_tokens=4, rejected_tokens=3)
    loss, metrics = dpo_loss(policy, None, beta=0.5, loss_type="cpo", rpo_alpha=2.0)

    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)) + 2.0, abs=1e-12)
    assert metrics["nll_loss"].item() == pytest.approx(1.0, abs=1e-12)


def test_rpo_nll_is_token_level_mean():
    # Two pairs with 1 and 3 chosen tokens and sums -1 and -9: nll = 10 / 4 = 2.5, not the
    # mean of per-pair averages (1 + 3) / 2 = 2.
    policy = PreferenceLogps(
        torch.tensor([-1.0, -9.0]),
        torch.tensor([-1.0, -9.0]),
        torch.tensor([1, 3]),
        torch.tensor([1, 3]),
    )
    reference = PreferenceLogps(torch.tensor([-1.0, -9.0]), torch.tensor([-1.0, -9.0]))
    loss, metrics = dpo_loss(policy, reference, beta=0.1, rpo_alpha=1.0)

    assert metrics["nll_loss"].item() == pytest.approx(2.5, abs=1e-6)
    assert loss.item() == pytest.approx(math.log(2) + 2.5, abs=1e-6)


# The op against its plain-PyTorch twin


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_op_matches_twin(loss_type, dtype):
    policy, reference = random_pairs(37, dtype)
    reference = None if loss_type in REFERENCE_FREE else reference
    inputs = [policy.chosen, policy.rejected]
    if reference is not None:
        inputs += [reference.chosen, reference.rejected]
    smoothing = 0.2 if loss_type in SMOOTHED else 0.0

    def run(implementation):
        return dpo_loss(
            policy,
            reference,
            beta=0.3,
            loss_type=loss_type,
            label_smoothing=smoothing,
            simpo_gamma=0.7,
            rpo_alpha=0.5,
            implementation=implementation,
        )

    loss, metrics, grads = implementations_agree(run, inputs, dtype)
    assert "nll_loss" in metrics
    assert_all_finite(loss, metrics, grads)


def test_module_matches_function():
    policy, reference = random_pairs(5, torch.float32)
    module = DPOLoss(beta=0.2, loss_type="robust", label_smoothing=0.1)

    loss, metrics = module(policy, reference)
    expected, expected_metrics = dpo_loss(policy, reference, 0.2, "robust", 0.1)

    assert module.needs_reference
    torch.testing.assert_close(loss, expected)
    assert metrics.keys() == expected_metrics.keys()


def test_metrics_are_detached():
    policy, reference = random_pairs(4, torch.float32)
    _, metrics = dpo_loss(policy, reference, beta=0.1, rpo_alpha=1.0)
    for name, value in metrics.items():
        assert not value.requires_grad, name


def test_from_concatenated_splits_chosen_first():
    logps = PreferenceLogps.from_concatenated(
        torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([5, 6, 7, 8])
    )
    assert logps.chosen.tolist() == [1.0, 2.0]
    assert logps.rejected.tolist() == [3.0, 4.0]
    assert logps.chosen_tokens.tolist() == [5, 6]
    assert logps.rejected_tokens.tolist() == [7, 8]


# Agreement with TRL


def _trl_inputs(num_pairs=6, length=9):
    """Return per-token logps (2P, T-1), the completion mask (2P, T) and reference sums."""
    completion_mask = (torch.rand(2 * num_pairs, length) > 0.3).long()
    completion_mask[:, 0] = 0
    completion_mask[:, 1] = 1  # at least one token per response
    shifted = completion_mask[:, 1:].bool()
    per_token = -torch.rand(2 * num_pairs, length - 1, dtype=torch.float64) * 3
    per_token = torch.where(shifted, per_token, torch.zeros_like(per_token))
    reference = -torch.rand(2 * num_pairs, dtype=torch.float64) * 3 * shifted.sum(1)
    return per_token, completion_mask, reference


def _our_policy(per_token, completion_mask):
    leaf = per_token.clone().requires_grad_(True)
    tokens = completion_mask[:, 1:].sum(dim=1)
    return leaf, PreferenceLogps.from_concatenated(leaf.sum(dim=1), tokens)


DPO_METRICS = [
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
]


@pytest.mark.parametrize(
    ("loss_type", "label_smoothing", "rpo_alpha"),
    [
        ("sigmoid", 0.0, None),
        ("robust", 0.2, None),
        ("hinge", 0.0, None),
        ("ipo", 0.0, None),
        ("sigmoid", 0.0, 0.7),
    ],
    ids=["sigmoid", "robust", "hinge", "ipo", "rpo"],
)
def test_matches_trl_dpo_trainer(loss_type, label_smoothing, rpo_alpha):
    from tests.losses import trl_harness

    per_token, completion_mask, reference_sums = _trl_inputs()
    num_pairs = per_token.shape[0] // 2
    trl_leaf = per_token.clone().requires_grad_(True)
    loss_types, loss_weights = [loss_type], [1.0]
    if rpo_alpha is not None:
        loss_types, loss_weights = [loss_type, "sft"], [1.0, rpo_alpha]
    trl_loss, trl_metrics = trl_harness.dpo_loss(
        trl_leaf,
        completion_mask,
        reference_sums[:num_pairs],
        reference_sums[num_pairs:],
        beta=0.3,
        loss_types=loss_types,
        loss_weights=loss_weights,
        label_smoothing=label_smoothing,
    )
    (trl_grad,) = torch.autograd.grad(trl_loss, [trl_leaf])

    leaf, policy = _our_policy(per_token, completion_mask)
    reference = PreferenceLogps.from_concatenated(reference_sums)
    loss, metrics = dpo_loss(
        policy,
        reference,
        beta=0.3,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        rpo_alpha=rpo_alpha,
    )
    (grad,) = torch.autograd.grad(loss, [leaf])

    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-10, rel=1e-10)
    assert_metrics_match(metrics, trl_metrics, DPO_METRICS)
    shifted = completion_mask[:, 1:].bool()
    torch.testing.assert_close(grad[shifted], trl_grad[shifted], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("loss_type", ["simpo", "cpo"])
def test_matches_trl_cpo_trainer(loss_type):
    from tests.losses import trl_harness

    per_token, completion_mask, _ = _trl_inputs()
    leaf, policy = _our_policy(per_token, completion_mask)
    loss, metrics = dpo_loss(
        policy,
        None,
        beta=0.4,
        loss_type=loss_type,
        label_smoothing=0.1,
        simpo_gamma=0.3,
        rpo_alpha=0.6,
    )

    # TRL's forward pass returns averages for simpo and sums for cpo, and the NLL as
    # cross-entropy over the chosen completion tokens. TRL's CPOTrainer calls CPO "sigmoid".
    if loss_type == "simpo":
        chosen, rejected = policy.chosen_mean(), policy.rejected_mean()
    else:
        chosen, rejected = policy.chosen, policy.rejected
    num_pairs = policy.chosen.shape[0]
    chosen_mask = completion_mask[:num_pairs, 1:].bool()
    nll = -per_token[:num_pairs][chosen_mask].mean()
    trl_loss, trl_metrics = trl_harness.cpo_loss(
        chosen.detach(),
        rejected.detach(),
        nll,
        beta=0.4,
        loss_type="simpo" if loss_type == "simpo" else "sigmoid",
        cpo_alpha=0.6,
        simpo_gamma=0.3,
        label_smoothing=0.1,
    )

    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-10, rel=1e-10)
    assert_metrics_match(metrics, trl_metrics, DPO_METRICS + ["nll_loss"])


# Edge cases and validation


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_extreme_margins_stay_finite(loss_type):
    policy = PreferenceLogps(
        torch.tensor([-1e4, 0.0], requires_grad=True),
        torch.tensor([0.0, -1e4], requires_grad=True),
        torch.tensor([0, 3]),
        torch.tensor([5, 0]),
    )
    reference = None
    if loss_type not in REFERENCE_FREE:
        reference = PreferenceLogps(torch.zeros(2), torch.zeros(2))
    loss, metrics = dpo_loss(policy, reference, beta=1.0, loss_type=loss_type, rpo_alpha=1.0)
    grads = torch.autograd.grad(loss, [policy.chosen, policy.rejected])
    assert_all_finite(loss, metrics, grads)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"beta": 0.0}, "beta must be finite and greater than 0"),
        ({"beta": float("inf")}, "beta must be finite and greater than 0"),
        ({"beta": -0.1}, "beta must be finite and greater than 0"),
        ({"loss_type": "kto"}, "unknown DPO loss_type 'kto'"),
        ({"label_smoothing": 0.5}, r"label_smoothing must be in \[0, 0.5\)"),
        ({"label_smoothing": 0.1, "loss_type": "hinge"}, "label_smoothing must be 0 for"),
        ({"loss_type": "simpo", "simpo_gamma": -1.0}, "simpo_gamma must be finite and at least 0"),
        ({"rpo_alpha": -1.0}, "rpo_alpha must be finite and at least 0"),
        ({"implementation": "triton"}, "implementation must be one of"),
    ],
    ids=[
        "beta-zero",
        "beta-infinite",
        "beta-negative",
        "loss-type",
        "smoothing-range",
        "smoothing-hinge",
        "gamma",
        "rpo-alpha",
        "implementation",
    ],
)
def test_module_rejects_bad_hyperparameters(arguments, message):
    with pytest.raises(ValueError, match=message):
        DPOLoss(**arguments)


def test_reference_free_loss_rejects_reference():
    policy, reference = random_pairs(3, torch.float32)
    with pytest.raises(ValueError, match="'simpo' is reference-free"):
        dpo_loss(policy, reference, beta=0.1, loss_type="simpo")


def test_reference_loss_needs_reference():
    policy, _ = random_pairs(3, torch.float32)
    with pytest.raises(ValueError, match="'sigmoid' needs reference"):
        dpo_loss(policy, None, beta=0.1)


def test_length_normalised_loss_needs_token_counts():
    policy, reference = random_pairs(3, torch.float32)
    policy.chosen_tokens = None
    with pytest.raises(ValueError, match="chosen_tokens is None"):
        dpo_loss(policy, reference, beta=0.1, loss_type="ipo")


def test_mismatched_shapes_raise():
    policy, reference = random_pairs(3, torch.float32)
    reference.rejected = torch.zeros(4)
    with pytest.raises(ValueError, match=r"reference.rejected must have shape \(P,\) = \(3,\)"):
        dpo_loss(policy, reference, beta=0.1)


def test_config_lists_the_same_loss_types():
    # The config module keeps its own copy so that validating a config does not import torch.
    from pyalign import config
    from pyalign.losses import REFERENCE_FREE_LOSS_TYPES

    assert tuple(config.DPO_LOSS_TYPES) == DPO_LOSS_TYPES
    assert tuple(config.REFERENCE_FREE_DPO_LOSS_TYPES) == REFERENCE_FREE_LOSS_TYPES


def test_torch_implementation_logs_selection(caplog, monkeypatch):
    from pyalign.losses import _dispatch

    # The selection is logged once per process; forget an earlier one.
    monkeypatch.setattr(_dispatch, "_torch_selection_logged", False)
    policy, reference = random_pairs(3, torch.float32)

    with caplog.at_level(logging.INFO, logger="pyalign.losses"):
        dpo_loss(policy, reference, beta=0.1, implementation="torch")

    messages = [record.getMessage() for record in caplog.records]
    assert any("plain-PyTorch loss implementation was selected" in text for text in messages)
