"""ORPO: supervised fine-tuning on the chosen responses plus an odds-ratio preference term.

ORPO needs no reference model, so none is loaded and each batch runs one forward pass. The
policy's summed log-probabilities and token counts give the per-token averages the odds ratio is
built from (see ``pyalign.losses.orpo``).
"""

from __future__ import annotations

from pyalign.losses import ORPOLoss
from pyalign.trainers.dpo import PreferenceTrainer


class ORPOTrainer(PreferenceTrainer):
    """Train with the ORPO loss; ``trainer.beta`` weights the odds-ratio term (lambda)."""

    name = "orpo"
    needs_reference = False

    def __init__(self, config, *args, **kwargs):
        self.loss = ORPOLoss(
            beta=config["trainer"]["beta"], implementation=config["backend"]["kernels"]
        )
        super().__init__(config, *args, **kwargs)

    def pair_loss(self, policy, reference):
        return self.loss(policy)
