"""The DPO and ORPO trainers' wiring: loss variants and when a reference model is built."""

import math

import pytest
import torch

from pyalign.trainers import DPOTrainer, ORPOTrainer
from tests.trainers.common import QUICKSTART_VALIDATION, build, config_for

VARIANTS = [
    {"loss_type": "sigmoid"},
    {"loss_type": "sigmoid", "label_smoothing": 0.1},
    {"loss_type": "robust", "label_smoothing": 0.1},
    {"loss_type": "ipo"},
    {"loss_type": "hinge"},
    {"loss_type": "simpo", "simpo_gamma": 0.3, "beta": 2.0},
    {"loss_type": "cpo"},
    {"loss_type": "sigmoid", "rpo_alpha": 1.0},
]


def make(trainer_class, trainer_type, **trainer):
    config, model, data, device = build(config_for(trainer_type, **trainer), QUICKSTART_VALIDATION)
    return trainer_class(config, model, data["train"], data.get("validation"), device)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_dpo_variant_trains(variant):
    trainer = make(DPOTrainer, "dpo", max_steps=2, learning_rate=1e-2, **variant)
    records = trainer.train().train
    for name, value in records[-1].items():
        assert math.isfinite(value), name
    assert records[-1]["loss"] != records[0]["loss"]
    assert ("nll_loss" in records[-1]) == ("rpo_alpha" in variant)


@pytest.mark.parametrize("loss_type", ["simpo", "cpo"])
def test_reference_free_dpo_builds_no_reference(loss_type, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a reference model was built")

    monkeypatch.setattr("pyalign.trainers.dpo.ReferenceModel", fail)
    trainer = make(DPOTrainer, "dpo", loss_type=loss_type, max_steps=1)
    assert trainer.reference is None
    trainer.train()


def test_sigmoid_dpo_runs_reference(monkeypatch):
    trainer = make(DPOTrainer, "dpo", max_steps=1)
    assert trainer.reference is not None
    activations = []
    original = trainer.reference.activate

    def counted():
        activations.append(1)
        return original()

    monkeypatch.setattr(trainer.reference, "activate", counted)
    trainer.train()
    assert activations


def test_orpo_builds_no_reference(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a reference model was built")

    monkeypatch.setattr("pyalign.trainers.dpo.ReferenceModel", fail)
    trainer = make(ORPOTrainer, "orpo", max_steps=2, learning_rate=1e-2)
    assert trainer.reference is None
    record = trainer.train().train[-1]
    for name in ("nll_loss", "log_odds_ratio", "rewards/accuracies"):
        assert name in record, name


def test_orpo_full_fine_tuning_holds_one_copy():
    config = config_for("orpo", max_steps=1)
    config["adapter"] = None
    config, model, data, device = build(config, QUICKSTART_VALIDATION)
    before = sum(parameter.numel() for parameter in model.parameters())
    trainer = ORPOTrainer(config, model, data["train"], None, device)
    trainer.train()
    assert trainer.reference is None
    # The only parameters the trainer holds are the model's own.
    optimized = sum(p.numel() for group in trainer.optimizer.param_groups for p in group["params"])
    assert optimized == before


def test_dpo_full_fine_tuning_reference_stays_frozen():
    config = config_for("dpo", max_steps=2, learning_rate=1e-2)
    config["adapter"] = None
    config, model, data, device = build(config, QUICKSTART_VALIDATION)
    trainer = DPOTrainer(config, model, data["train"], None, device)
    frozen = {name: value.clone() for name, value in trainer.reference.frozen.state_dict().items()}
    trainer.train()
    for name, value in trainer.reference.frozen.state_dict().items():
        assert torch.equal(value, frozen[name]), name


@pytest.mark.parametrize("max_grad_norm", [1e-3, None], ids=["clipped", "not-clipped"])
def test_grad_norm_logged(max_grad_norm):
    # The norm before clipping, so a tiny max_grad_norm does not lower it.
    trainer = make(DPOTrainer, "dpo", max_steps=1, max_grad_norm=max_grad_norm)
    record = trainer.train().train[-1]

    assert "grad_norm" in record
    assert record["grad_norm"] > 1e-3
