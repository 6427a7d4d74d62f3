"""GRPO: online reinforcement learning from reward functions, with group-relative advantages.

Shao et al., "DeepSeekMath" (2024), https://arxiv.org/abs/2402.03300, as TRL 1.16's
GRPOTrainer runs it. One optimizer step:

1. Sample. Each micro-batch takes ``batch_size / num_generations`` prompts and samples
   ``num_generations`` (G) completions of each with ``model.generate`` (left-padded prompts,
   ``temperature``, ``top_p``, at most ``max_completion_length`` new tokens). A completion ends
   at its first EOS, which it keeps; one without EOS was truncated by the length limit.
2. Score. The reward functions score every completion (``pyalign.trainers.rewards``) and their
   weighted sum r is the completion's reward.
3. Advantages. Within each group of G completions of one prompt, ``A = r - mean(r)``, divided
   by the group's standard deviation (``scale_rewards: group``), by the whole generation
   batch's (``batch``) or by nothing (``none``), each plus 1e-4. A group whose rewards are all
   equal gets A = 0 exactly.
4. Update. The policy's per-token log-probabilities of the completions, from the fused op,
   enter ``pyalign.losses.grpo_loss``. ``num_iterations`` > 1 reuses one generation batch for
   that many optimizer steps, with the log-probabilities at sampling time as the old policy.

With ``beta`` > 0 the reference model (the policy with its LoRA adapters disabled, or a frozen
copy) adds a KL penalty; with ``beta`` = 0 no reference is loaded or run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from pyalign import ops
from pyalign.data import PromptData
from pyalign.losses import GRPOLoss
from pyalign.models import ReferenceModel, decoder_and_head
from pyalign.trainers import rewards
from pyalign.trainers.base import LossOutput, Trainer

logger = logging.getLogger(__name__)

# Added to the standard deviation before dividing by it, as TRL does.
ADVANTAGE_EPSILON = 1e-4


@dataclass
class Rollout:
    """A micro-batch of B sampled completions of P prompts (B = P x G), ready for the loss.

    Sequences are laid out as the left-padded prompts (Tp tokens) followed by the completions
    (Tc tokens, right-padded after their EOS).
    """

    input_ids: torch.Tensor  # (B, Tp + Tc)
    attention_mask: torch.Tensor  # (B, Tp + Tc), 0 on padding and after the completion's EOS
    position_ids: torch.Tensor  # (B, Tp + Tc), counting real tokens only
    label_mask: torch.Tensor  # (B, Tp + Tc) bool, True on the completion tokens in the loss
    loss_mask: torch.Tensor  # (B, Tc) bool, the same tokens in completion coordinates
    rewards: torch.Tensor  # (B,) weighted sum of the reward functions
    reward_table: np.ndarray  # (B, F) reward per function, NaN for None
    completion_lengths: torch.Tensor  # (B,) tokens up to and including EOS
    truncated: torch.Tensor  # (B,) bool, no EOS within max_completion_length
    advantages: torch.Tensor | None = None  # (B,)
    old_logps: torch.Tensor | None = None  # (B, Tc)
    ref_logps: torch.Tensor | None = None  # (B, Tc)

    @property
    def num_completions(self) -> int:
        return self.input_ids.shape[0]


class GRPOTrainer(Trainer):
    """Train with GRPO on the prompts of a :class:`~pyalign.data.PromptData`."""

    name = "grpo"

    def __init__(
        self, config, model, train_data: PromptData, eval_data: PromptData | None, device, **kw
    ):
        trainer = config["trainer"]
        self.num_generations = trainer["num_generations"]
        self.num_iterations = trainer["num_iterations"]
        super().__init__(config, model, train_data, eval_data, device, **kw)

        self.loss = GRPOLoss(
            beta=trainer["beta"],
            epsilon=trainer["epsilon"],
            epsilon_high=trainer["epsilon_high"],
            loss_type=trainer["loss_type"],
            max_completion_length=trainer["max_completion_length"],
            implementation=self.implementation,
        )
        self.reference = ReferenceModel(model) if trainer["beta"] > 0 else None
        tokenizer = train_data.tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id
        if self.eos_token_id is None:
            logger.warning(
                "GRPO: the tokenizer has no EOS token, so every completion runs to "
                "max_completion_length and counts as truncated"
            )
        self.reward_functions = rewards.load_reward_functions(
            trainer["reward_functions"], self.eos_token_id
        )
        self.reward_weights = trainer["reward_weights"] or [1.0] * len(self.reward_functions)
        self.generation_config = self._generation_config()

        self._round: list[Rollout] = []
        self._round_uses = 0
        self._round_metrics: dict[str, float] = {}

    # Schedule and batches

    @property
    def examples_per_batch(self) -> int:
        return self.trainer_config["batch_size"] // self.num_generations

    def _count_total_steps(self) -> int:
        steps = super()._count_total_steps()
        if self.trainer_config["max_steps"] is not None:
            return steps
        # Each generation batch serves num_iterations optimizer steps.
        return steps * self.num_iterations

    def train_batches(self):
        """Yield (epoch, prompt indices) forever, reshuffling the prompts at each epoch."""
        generator = torch.Generator().manual_seed(self.trainer_config["seed"])
        epoch = 0
        while True:
            for indices in self.train_data.batches(
                self.examples_per_batch, shuffle=True, generator=generator
            ):
                yield epoch, indices
            epoch += 1

    def step_batches(self, batches):
        """Sample a new generation batch, or reuse the last one ``num_iterations`` times."""
        if self._round_uses == 0:
            accumulation = self.trainer_config["gradient_accumulation_steps"]
            groups = [next(batches) for _ in range(accumulation)]
            self._start_round(groups)
        self._round_uses = (self._round_uses + 1) % self.num_iterations
        return self._round

    def step_metrics(self):
        return dict(self._round_metrics)

    def batch_weight(self, rollout: Rollout) -> float:
        # dapo normalises by the tokens of the whole generation batch, the others per
        # completion, so the micro-batches weigh by tokens or by completions respectively.
        if self.trainer_config["loss_type"] == "dapo":
            return float(rollout.loss_mask.sum())
        return rollout.num_completions

    def progress_postfix(self, record):
        return {"loss": f"{record['loss']:.4f}", "reward": f"{record['reward']:.3f}"}

    # A generation batch

    def _start_round(self, groups: list[tuple[int, np.ndarray]]) -> None:
        epochs = [epoch for epoch, _ in groups]
        rollouts = [self._sample(self.train_data, indices) for _, indices in groups]
        all_rewards = torch.cat([rollout.rewards for rollout in rollouts])  # (R,)
        advantages, zero_std = group_advantages(
            all_rewards, self.num_generations, self.trainer_config["scale_rewards"]
        )
        start = 0
        for rollout in rollouts:
            end = start + rollout.num_completions
            rollout.advantages = advantages[start:end].to(self.device)
            start = end
            self._precompute_logps(rollout)

        self._round = list(zip(epochs, rollouts))
        if not any(bool(rollout.loss_mask.any()) for rollout in rollouts):
            logger.warning(
                "GRPO: every completion of this generation batch hit max_completion_length (%d "
                "tokens) and mask_truncated_completions removes them all from the loss, so the "
                "step changes nothing; raise max_completion_length",
                self.trainer_config["max_completion_length"],
            )
        self._round_metrics = rollout_metrics(rollouts, self.reward_functions, self.num_generations)
        self._round_metrics["frac_reward_zero_std"] = float(zero_std.float().mean())

    @torch.no_grad()
    def _sample(self, data: PromptData, prompt_indices: np.ndarray) -> Rollout:
        """Generate G completions for each prompt and score them."""
        group_size = self.num_generations
        rows = [int(index) for index in prompt_indices for _ in range(group_size)]
        prompt_ids, prompt_mask = left_pad(
            [data.prompt_ids[row] for row in rows], self.pad_token_id
        )  # (B, Tp) each
        prompt_ids, prompt_mask = prompt_ids.to(self.device), prompt_mask.to(self.device)

        was_training = self.model.training
        self.model.eval()
        try:
            sequences = self.model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                generation_config=self.generation_config,
            )  # (B, Tp + Tc)
        finally:
            self.model.train(was_training)
        completion_ids = sequences[:, prompt_ids.shape[1] :]  # (B, Tc)
        completion_mask, truncated = mask_after_first_eos(completion_ids, self.eos_token_id)

        loss_mask = completion_mask
        if self.trainer_config["mask_truncated_completions"]:
            loss_mask = completion_mask & ~truncated.unsqueeze(1)
        attention_mask = torch.cat([prompt_mask, completion_mask.long()], dim=1)
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        label_mask = torch.cat([torch.zeros_like(prompt_mask, dtype=torch.bool), loss_mask], 1)

        reward_table, total = self._score(data, rows, completion_ids, completion_mask)
        return Rollout(
            input_ids=sequences,
            attention_mask=attention_mask,
            position_ids=position_ids,
            label_mask=label_mask,
            loss_mask=loss_mask,
            rewards=torch.as_tensor(total, dtype=torch.float32),
            reward_table=reward_table,
            completion_lengths=completion_mask.sum(dim=1).cpu(),
            truncated=truncated.cpu(),
        )

    def _score(self, data: PromptData, rows, completion_ids, completion_mask):
        ids_per_completion = [
            ids[mask].tolist() for ids, mask in zip(completion_ids.cpu(), completion_mask.cpu())
        ]
        texts = [data.tokenizer.decode(ids, skip_special_tokens=True) for ids in ids_per_completion]
        prompts = [data.prompts[row] for row in rows]
        columns = {
            name: [values[row] for row in rows] for name, values in data.reward_columns.items()
        }

        def describe_row(position: int) -> str:
            row = rows[position]
            prompt = data.prompts[row]
            excerpt = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            return (
                f"record {data.record_numbers[row]} of {data.source} (completion "
                f"{position % self.num_generations + 1} of {self.num_generations} for prompt "
                f"{excerpt!r})"
            )

        return rewards.score_completions(
            self.reward_functions,
            self.reward_weights,
            prompts,
            texts,
            ids_per_completion,
            columns,
            describe_row,
        )

    @torch.no_grad()
    def _precompute_logps(self, rollout: Rollout) -> None:
        """Compute the old policy's and the reference's log-probabilities, when needed."""
        if self.num_iterations > 1:
            rollout.old_logps, _ = self._token_logps(self.model, rollout, with_entropy=False)
        if self.reference is not None:
            with self.reference.activate() as reference_model:
                rollout.ref_logps, _ = self._token_logps(
                    reference_model, rollout, with_entropy=False
                )

    # Loss

    def compute_loss(self, rollout: Rollout) -> LossOutput:
        logps, entropy = self._token_logps(self.model, rollout, with_entropy=True)
        loss, metrics = self.loss(
            logps, rollout.old_logps, rollout.ref_logps, rollout.advantages, rollout.loss_mask
        )
        weights = {}
        if entropy is not None:
            metrics["entropy"] = entropy.mean()
            weights["entropy"] = entropy.numel()
        return LossOutput(loss, metrics, weights)

    def _token_logps(self, model, rollout: Rollout, with_entropy: bool):
        """Return the per-token log-probabilities (B, Tc), 0 outside the loss mask.

        The logits are divided by the sampling temperature first, as in TRL, so that the
        scores are those of the distribution the completions were drawn from. With
        ``with_entropy``, also the entropy of that next-token distribution at each of the N
        counted tokens (N,), without gradient, or None when there are none.
        """
        decoder, head = decoder_and_head(model)
        outputs = decoder(
            input_ids=rollout.input_ids,
            attention_mask=rollout.attention_mask,
            position_ids=rollout.position_ids,
        )
        hidden_states, bias = head.op_inputs(
            outputs.last_hidden_state, self.trainer_config["temperature"]
        )  # (B, Tp + Tc, H)
        result = ops.sequence_logprobs(
            hidden_states,
            head.weight,
            bias,
            rollout.input_ids,
            rollout.label_mask,
            implementation=self.implementation,
            compute_entropy=with_entropy,
        )
        # token_logps is in row-major order of the counted tokens, as is loss_mask, so the
        # scatter puts each value at its (b, t).
        logps = result.token_logps.new_zeros(rollout.loss_mask.shape)  # (B, Tc)
        logps = logps.masked_scatter(rollout.loss_mask, result.token_logps)

        entropy = None
        if with_entropy and result.token_logps.numel() > 0:
            entropy = result.entropy
        return logps, entropy

    # Evaluation

    def evaluation_metrics(self) -> dict[str, float]:
        """Sample G completions for every held-out prompt and report their rewards.

        The sampling noise is seeded the same way at every evaluation (without touching the
        training's random state), so evaluations differ only by the policy.
        """
        batch_size = self.trainer_config["eval_batch_size"] or self.trainer_config["batch_size"]
        prompts_per_batch = batch_size // self.num_generations
        devices = [self.device] if self.device.type == "cuda" else []
        rollouts = []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.trainer_config["seed"])
            for indices in self.eval_data.batches(prompts_per_batch, shuffle=False):
                rollouts.append(self._sample(self.eval_data, indices))
        all_rewards = torch.cat([rollout.rewards for rollout in rollouts])
        _, zero_std = group_advantages(
            all_rewards, self.num_generations, self.trainer_config["scale_rewards"]
        )
        record = rollout_metrics(rollouts, self.reward_functions, self.num_generations)
        record["frac_reward_zero_std"] = float(zero_std.float().mean())
        return record

    def summary(self):
        return {
            "reference_model": self.reference is not None,
            "reward_functions": [function.name for function in self.reward_functions],
        }

    def _generation_config(self):
        from transformers import GenerationConfig

        trainer = self.trainer_config
        # top_k=0 turns off transformers' default top-k of 50, as TRL's default does.
        return GenerationConfig(
            do_sample=True,
            temperature=trainer["temperature"],
            top_p=trainer["top_p"],
            top_k=0,
            max_new_tokens=trainer["max_completion_length"],
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
            use_cache=True,
        )


def left_pad(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``input_ids`` and ``attention_mask``, each (B, T) int64."""
    length = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        if ids:
            input_ids[row, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, length - len(ids) :] = 1
    return input_ids, attention_mask


def mask_after_first_eos(
    completion_ids: torch.Tensor, eos_token_id: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the completion mask (B, Tc), True up to and including the first EOS, and whether
    each completion was truncated (B,), having no EOS at all."""
    batch_size, length = completion_ids.shape
    if eos_token_id is None:
        mask = torch.ones_like(completion_ids, dtype=torch.bool)
        return mask, torch.ones(batch_size, dtype=torch.bool, device=completion_ids.device)
    is_eos = completion_ids == eos_token_id
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), length)  # (B,)
    positions = torch.arange(length, device=completion_ids.device).unsqueeze(0)  # (1, Tc)
    mask = positions <= first_eos.unsqueeze(1)
    return mask, ~has_eos


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale_rewards: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the advantages (R,) of R rewards in groups of ``group_size``, and which of the
    R / group_size groups have all-equal rewards (those get advantage 0)."""
    grouped = rewards.view(-1, group_size)  # (R / G, G)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + ADVANTAGE_EPSILON)
    elif scale_rewards == "batch":
        advantages = advantages / (rewards.std() + ADVANTAGE_EPSILON)
    # Rounding in the mean can leave tiny non-zero values in a group of equal rewards.
    all_equal = (grouped == grouped[:, :1]).all(dim=1)  # (R / G,)
    advantages = torch.where(all_equal.unsqueeze(1), torch.zeros_like(advantages), advantages)
    return advantages.reshape(-1), all_equal


@torch.no_grad()
def rollout_metrics(
    rollouts: list[Rollout], functions: list[rewards.RewardFunction], group_size: int
) -> dict[str, float]:
    """Reward and completion-length metrics of a generation batch, named as TRL logs them.

    ``reward_std`` is the mean over groups of the sample standard deviation of their rewards;
    ``rewards/<name>/std`` is over all completions that function scored.
    """
    total = torch.cat([rollout.rewards for rollout in rollouts]).double()  # (R,)
    table = np.concatenate([rollout.reward_table for rollout in rollouts])  # (R, F)
    lengths = torch.cat([rollout.completion_lengths for rollout in rollouts]).double()
    truncated = torch.cat([rollout.truncated for rollout in rollouts])

    metrics = {
        "reward": float(total.mean()),
        "reward_std": float(total.view(-1, group_size).std(dim=1).mean()),
    }
    for index, function in enumerate(functions):
        values = table[:, index]
        values = values[~np.isnan(values)]
        # A function that returned None for every completion has no mean to log.
        if values.size == 0:
            continue
        metrics[f"rewards/{function.name}/mean"] = float(values.mean())
        metrics[f"rewards/{function.name}/std"] = (
            float(values.std(ddof=1)) if values.size > 1 else 0.0
        )
    metrics["completions/mean_length"] = float(lengths.mean())
    metrics["completions/min_length"] = float(lengths.min())
    metrics["completions/max_length"] = float(lengths.max())
    metrics["completions/clipped_ratio"] = float(truncated.float().mean())
    return metrics
