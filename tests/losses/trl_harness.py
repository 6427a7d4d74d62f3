"""Run TRL's own loss code on given log-probabilities, for comparison with pyalign.losses.

TRL computes its losses inside trainer methods that also run the model. Each function here calls
such a method unbound, on a stand-in ``self`` that carries the attributes the method reads, and a
stand-in model whose outputs are the given per-token log-probabilities. What runs is TRL's
arithmetic, unchanged. Written against TRL 1.16; a TRL that renames these attributes makes the
comparison tests fail, not pass silently.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is not installed (pip install -e '.[test]')")


class _Accelerator:
    """The single-process subset of accelerate.Accelerator that the loss code calls."""

    device = torch.device("cpu")
    num_processes = 1
    sync_gradients = True

    def gather_for_metrics(self, tensor):
        return tensor

    def gather(self, tensor):
        return tensor

    def reduce(self, tensor, reduction="sum"):
        return tensor


def _metrics_store():
    return defaultdict(lambda: defaultdict(list))


def _last_metrics(store, mode="eval"):
    return {name: values[-1] for name, values in store[mode].items()}


def _model_outputs(per_token_logps):
    """Return the fused-LM-head outputs TRL's DPO and KTO trainers read."""
    zeros = torch.zeros_like(per_token_logps.detach())
    return SimpleNamespace(
        log_probs=per_token_logps,
        entropy=zeros,
        mean_logits=zeros,
        is_top1=torch.zeros_like(zeros, dtype=torch.bool),
    )


def dpo_loss(
    per_token_logps,
    completion_mask,
    ref_chosen_logps,
    ref_rejected_logps,
    beta,
    loss_types,
    loss_weights=None,
    label_smoothing=0.0,
):
    """Run ``trl.DPOTrainer._compute_loss``; return ``(loss, metrics)``.

    Args:
        per_token_logps: the policy's log-probability of each next token, 0 outside the
            completion, chosen rows first. Shape: (2P, T - 1).
        completion_mask: the completion tokens, never position 0, so that TRL's unshifted
            length equals the count of the shifted mask. Shape: (2P, T), int.
        ref_chosen_logps, ref_rejected_logps: the reference's summed log-probabilities. (P,).
    """
    from trl import DPOTrainer

    num_sequences, length = completion_mask.shape
    fake = SimpleNamespace(
        model=SimpleNamespace(training=False),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=list(loss_types),
        loss_weights=list(loss_weights or [1.0] * len(loss_types)),
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics=_metrics_store(),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(num_sequences, length, dtype=torch.long),
        "attention_mask": torch.ones(num_sequences, length, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen_logps,
        "ref_rejected_logps": ref_rejected_logps,
    }

    def model(**kwargs):
        return _model_outputs(per_token_logps)

    loss = DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False)
    return loss, _last_metrics(fake._metrics)


def _preference_forward(chosen_logps, rejected_logps, nll_loss):
    logits = torch.zeros(1)
    return lambda model, batch: (chosen_logps, rejected_logps, logits, logits, nll_loss)


def cpo_loss(
    chosen_logps,
    rejected_logps,
    nll_loss,
    beta,
    loss_type,
    cpo_alpha,
    simpo_gamma,
    label_smoothing=0.0,
):
    """Run ``trl.experimental.cpo.CPOTrainer.get_batch_loss_metrics``; return (loss, metrics).

    ``chosen_logps`` and ``rejected_logps`` are what TRL's forward pass would return: averages
    per token for ``simpo``, sums otherwise. ``nll_loss`` is the chosen per-token NLL.
    """
    from trl.experimental.cpo import CPOTrainer

    fake = SimpleNamespace(
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        alpha=0.0,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        simpo_gamma=simpo_gamma,
        cpo_alpha=cpo_alpha,
        concatenated_forward=_preference_forward(chosen_logps, rejected_logps, nll_loss),
    )
    fake.cpo_loss = lambda chosen, rejected: CPOTrainer.cpo_loss(fake, chosen, rejected)
    return CPOTrainer.get_batch_loss_metrics(fake, None, {}, train_eval="train")


def orpo_loss(chosen_averages, rejected_averages, nll_loss, beta):
    """Run ``trl.experimental.orpo.ORPOTrainer.get_batch_loss_metrics``; return (loss, metrics)."""
    from trl.experimental.orpo import ORPOTrainer

    fake = SimpleNamespace(
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        beta=beta,
        concatenated_forward=_preference_forward(chosen_averages, rejected_averages, nll_loss),
    )
    fake.odds_ratio_loss = lambda chosen, rejected: ORPOTrainer.odds_ratio_loss(
        fake, chosen, rejected
    )
    return ORPOTrainer.get_batch_loss_metrics(fake, None, {}, train_eval="train")


def kto_loss(
    per_token_logps,
    completion_mask,
    labels,
    ref_logps,
    kl_logps,
    ref_kl_logps,
    beta,
    desirable_weight,
    undesirable_weight,
):
    """Run ``trl.KTOTrainer._compute_loss``; return ``(loss, metrics)``.

    ``per_token_logps`` (B, T - 1) is 0 outside the completion; ``completion_mask`` is (B, T);
    ``ref_logps``, ``kl_logps`` and ``ref_kl_logps`` are (B,) sums.
    """
    from trl import KTOTrainer

    num_sequences, length = completion_mask.shape
    fake = SimpleNamespace(
        model=SimpleNamespace(training=False),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        calculate_KL=True,
        loss_type="kto",
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
        _metrics=_metrics_store(),
        _total_train_tokens=0,
        _tp_size=1,
        _compute_kl_logps=lambda model, batch: kl_logps,
    )
    batch = {
        "label": labels,
        "input_ids": torch.zeros(num_sequences, length, dtype=torch.long),
        "attention_mask": torch.ones(num_sequences, length, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_logps": ref_logps,
        "ref_KL_logps": ref_kl_logps,
    }

    def model(**kwargs):
        return _model_outputs(per_token_logps)

    loss = KTOTrainer._compute_loss(fake, model, batch, return_outputs=False)
    return loss, _last_metrics(fake._metrics)


def grpo_loss(
    logps,
    old_logps,
    ref_logps,
    advantages,
    completion_mask,
    beta,
    epsilon,
    epsilon_high,
    loss_type,
    max_completion_length,
    num_items_in_batch,
):
    """Run ``trl.GRPOTrainer._compute_loss`` in evaluation mode; return ``(loss, metrics)``.

    All per-token tensors are (B, T); ``old_logps`` may be None.
    """
    from trl import GRPOTrainer

    num_sequences, length = logps.shape
    fake = SimpleNamespace(
        model=SimpleNamespace(training=False),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type=loss_type,
        epsilon_low=epsilon,
        epsilon_high=epsilon if epsilon_high is None else epsilon_high,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        current_gradient_accumulation_steps=1,
        max_completion_length=max_completion_length,
        _entropy_bonus_enabled=False,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        _metrics=_metrics_store(),
    )
    fake._get_per_token_logps_and_entropies = lambda *args, **kwargs: (
        logps,
        torch.zeros_like(logps.detach()),
        None,
    )
    inputs = {
        "prompt_ids": torch.zeros(num_sequences, 1, dtype=torch.long),
        "prompt_mask": torch.ones(num_sequences, 1, dtype=torch.long),
        "completion_ids": torch.zeros(num_sequences, length, dtype=torch.long),
        "completion_mask": completion_mask.long(),
        "advantages": advantages,
        "ref_per_token_logps": ref_logps,
        "num_items_in_batch": num_items_in_batch,
    }
    if old_logps is not None:
        inputs["old_per_token_logps"] = old_logps
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    return loss, _last_metrics(fake._metrics)
