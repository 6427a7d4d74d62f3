"""Preference losses and the metrics users watch while training."""

from pyalign.losses.dpo import DPOLoss, PreferenceLogps, dpo_loss

__all__ = ["DPOLoss", "PreferenceLogps", "dpo_loss"]
