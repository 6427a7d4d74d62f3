"""Preference and policy-gradient losses, and the metrics users watch while training.

Each loss is a function returning ``(loss, metrics)``, backed by a C++ op with an analytic
backward (``implementation="native"``, the default) or by the op's plain-PyTorch twin
(``implementation="torch"``), and a module that checks its hyper-parameters at construction.
"""

from pyalign.losses.dpo import (
    DPO_LOSS_TYPES,
    REFERENCE_FREE_LOSS_TYPES,
    DPOLoss,
    PreferenceLogps,
    dpo_loss,
)
from pyalign.losses.grpo import GRPO_LOSS_TYPES, GRPOLoss, grpo_loss
from pyalign.losses.kto import KTOLoss, kto_kl, kto_loss
from pyalign.losses.orpo import ORPOLoss, orpo_loss

__all__ = [
    "DPO_LOSS_TYPES",
    "GRPO_LOSS_TYPES",
    "REFERENCE_FREE_LOSS_TYPES",
    "DPOLoss",
    "GRPOLoss",
    "KTOLoss",
    "ORPOLoss",
    "PreferenceLogps",
    "dpo_loss",
    "grpo_loss",
    "kto_kl",
    "kto_loss",
    "orpo_loss",
]
