"""The GRPO trainer's wiring: sampling, masks, advantages, reward errors and the reference."""

import math

import numpy as np
import pytest
import torch

from pyalign.config import load_config
from pyalign.errors import ConfigError
from pyalign.trainers import GRPOTrainer
from pyalign.trainers.grpo import group_advantages, left_pad, mask_after_first_eos
from pyalign.trainers.rewards import RewardFunctionError
from tests.trainers.common import build, config_for, write_jsonl

PROMPTS = [
    {"prompt": "Once upon a time,", "answer": "#### 3"},
    {"prompt": "One day, a little cat went to the park and saw", "answer": "#### 4"},
    {"prompt": "Tom had a ball.", "answer": "#### 5"},
    {"prompt": "It was a sunny day in the big green forest.", "answer": "#### 6"},
]


def grpo_config(reward_functions=("length_reward",), **trainer):
    specs = [
        {"name": "length", "target": 4} if name == "length_reward" else name
        for name in reward_functions
    ]
    settings = {
        "batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 8,
        "reward_functions": specs,
        **trainer,
    }
    return config_for("grpo", **settings)


def make_trainer(tmp_path, config, rows=PROMPTS):
    config, model, data, device = build(config, write_jsonl(tmp_path / "prompts.jsonl", rows))
    return GRPOTrainer(config, model, data["train"], data.get("validation"), device)


# Advantages


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_equal_rewards_give_zero_advantage(scale):
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.1, 1.0, 0.0, 0.5, 0.5])
    advantages, all_equal = group_advantages(rewards, 4, scale)
    assert torch.isfinite(advantages).all()
    assert (advantages[:4] == 0).all()
    assert all_equal.tolist() == [True, False]
    assert advantages[4:].abs().sum() > 0


def test_all_groups_equal_give_zero_advantages_not_nan():
    advantages, all_equal = group_advantages(torch.full((6,), 0.7), 3, "batch")
    assert (advantages == 0).all()
    assert all_equal.all()


def test_group_scaling_divides_by_group_std():
    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0])
    advantages, _ = group_advantages(rewards, 2, "group")
    # Group (1, 0): mean 0.5, sample std 0.7071; group (3, 1): mean 2, std 1.4142.
    expected = torch.tensor(
        [0.5 / (0.70711 + 1e-4), -0.5 / (0.70711 + 1e-4), 1 / 1.41431, -1 / 1.41431]
    )
    torch.testing.assert_close(advantages, expected, atol=1e-4, rtol=1e-4)


def test_no_scaling_keeps_centred_rewards():
    advantages, _ = group_advantages(torch.tensor([1.0, 0.0, 3.0, 1.0]), 2, "none")
    torch.testing.assert_close(advantages, torch.tensor([0.5, -0.5, 1.0, -1.0]))


# Masks and padding


def test_completion_ends_at_first_eos():
    eos = 2
    completions = torch.tensor([[5, 6, 2, 2, 2], [5, 2, 7, 2, 9], [5, 6, 7, 8, 9]])
    mask, truncated = mask_after_first_eos(completions, eos)
    assert mask.tolist() == [
        [True, True, True, False, False],
        [True, True, False, False, False],
        [True, True, True, True, True],
    ]
    assert truncated.tolist() == [False, False, True]


def test_left_pad():
    input_ids, attention_mask = left_pad([[1, 5, 6], [1]], pad_token_id=0)
    assert input_ids.tolist() == [[1, 5, 6], [0, 0, 1]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_left_padded_logps_match_unpadded_forward(tmp_path):
    # NOTE: rotary position embeddings depend only on relative positions, so on this Llama the
    # check covers the padding and mask layout; wrong position ids would show on a model with
    # absolute positions, which no test here loads.
    trainer = make_trainer(tmp_path, grpo_config(max_completion_length=6))
    rollout = trainer._sample(trainer.train_data, np.array([0, 1]))
    logps, _ = trainer._token_logps(trainer.model, rollout, with_entropy=False)
    prompt_length = rollout.input_ids.shape[1] - rollout.loss_mask.shape[1]

    trainer.model.eval()
    for row in range(rollout.num_completions):
        real = rollout.attention_mask[row].bool()
        ids = rollout.input_ids[row][real].unsqueeze(0)  # the sequence without padding
        with torch.no_grad():
            logits = trainer.model(input_ids=ids).logits[0].float()
        all_logps = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
        num_prompt = int(rollout.attention_mask[row, :prompt_length].sum())
        num_completion = int(rollout.loss_mask[row].sum())
        expected = all_logps[num_prompt - 1 : num_prompt - 1 + num_completion]
        torch.testing.assert_close(
            logps[row][rollout.loss_mask[row]], expected, atol=1e-4, rtol=1e-4
        )


def test_logps_and_entropy_at_sampling_temperature(tmp_path):
    # The completions are drawn at temperature 0.5, so they are scored under logits / 0.5.
    temperature = 0.5
    trainer = make_trainer(tmp_path, grpo_config(max_completion_length=6, temperature=temperature))
    torch.manual_seed(0)
    rollout = trainer._sample(trainer.train_data, np.array([0, 1]))
    trainer.model.eval()
    with torch.no_grad():
        logps, entropy = trainer._token_logps(trainer.model, rollout, with_entropy=True)
        logits = trainer.model(
            input_ids=rollout.input_ids,
            attention_mask=rollout.attention_mask,
            position_ids=rollout.position_ids,
        ).logits.float()

    completion_length = rollout.loss_mask.shape[1]
    scaled = logits[:, -completion_length - 1 : -1] / temperature  # (B, Tc, V)
    targets = rollout.input_ids[:, -completion_length:, None]
    expected = torch.log_softmax(scaled, dim=-1).gather(-1, targets)[..., 0]
    expected_entropy = torch.distributions.Categorical(logits=scaled).entropy()
    mask = rollout.loss_mask
    torch.testing.assert_close(logps[mask], expected[mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(entropy, expected_entropy[mask], atol=1e-4, rtol=1e-4)


def test_truncated_completions_masked_out(tmp_path):
    # A 3-token limit leaves the tiny model's completions without EOS.
    trainer = make_trainer(
        tmp_path, grpo_config(max_completion_length=3, mask_truncated_completions=True)
    )
    rollout = trainer._sample(trainer.train_data, np.array([0, 1]))
    for row in range(rollout.num_completions):
        if rollout.truncated[row]:
            assert not rollout.loss_mask[row].any()
        else:
            assert rollout.loss_mask[row].any()


def test_group_holds_num_generations_completions_of_one_prompt(tmp_path):
    trainer = make_trainer(tmp_path, grpo_config(num_generations=2, batch_size=4))
    rollout = trainer._sample(trainer.train_data, np.array([1, 3]))
    prompt_length = rollout.input_ids.shape[1] - rollout.loss_mask.shape[1]
    prompts = rollout.input_ids[:, :prompt_length]
    assert torch.equal(prompts[0], prompts[1])
    assert torch.equal(prompts[2], prompts[3])
    assert not torch.equal(prompts[0], prompts[2])


# Rewards in training


def _write_reward_module(folder, body):
    path = folder / "my_rewards.py"
    path.write_text(body, encoding="utf-8")
    return path


def test_failing_reward_function_names_function_and_row(tmp_path):
    module = _write_reward_module(
        tmp_path,
        "def picky(prompts, completions, **kwargs):\n"
        "    return [1 / 0 if 'Tom' in p else 1.0 for p in prompts]\n",
    )
    config = grpo_config(reward_functions=[f"{module}:picky"], batch_size=8)
    trainer = make_trainer(tmp_path, config)
    with pytest.raises(RewardFunctionError) as error:
        trainer.train()
    message = str(error.value)
    assert "reward function 'picky'" in message
    assert "record 3 of" in message
    assert "'Tom had a ball.'" in message
    assert "ZeroDivisionError" in message


def test_reward_columns_passed_as_keyword_lists(tmp_path):
    module = _write_reward_module(
        tmp_path,
        "CALLS = []\n"
        "def spy(prompts, completions, completion_ids, answer, **kwargs):\n"
        "    CALLS.append((list(prompts), list(answer), len(completions), len(completion_ids)))\n"
        "    return [0.0] * len(completions)\n",
    )
    config = grpo_config(reward_functions=[f"{module}:spy"], reward_columns=["answer"], max_steps=1)
    trainer = make_trainer(tmp_path, config)
    trainer.train()
    function = trainer.reward_functions[0].function
    prompts, answers, count, ids_count = function.__globals__["CALLS"][0]
    assert count == ids_count == 4
    for prompt, answer in zip(prompts, answers):
        row = next(row for row in PROMPTS if row["prompt"] == prompt)
        assert answer == row["answer"]


def test_equal_rewards_train_without_nan(tmp_path):
    module = _write_reward_module(
        tmp_path, "def constant(completions, **kwargs):\n    return [0.5] * len(completions)\n"
    )
    config = grpo_config(reward_functions=[f"{module}:constant"], max_steps=2)
    record = make_trainer(tmp_path, config).train().train[-1]
    for name, value in record.items():
        assert math.isfinite(value), name
    assert record["frac_reward_zero_std"] == 1.0
    assert record["loss"] == 0.0


def test_none_rewards_left_out_of_sum(tmp_path):
    module = _write_reward_module(
        tmp_path,
        "def sometimes(completions, **kwargs):\n"
        "    return [None if i % 2 else 2.0 for i in range(len(completions))]\n"
        "def always(completions, **kwargs):\n"
        "    return [1.0] * len(completions)\n",
    )
    config = grpo_config(reward_functions=[f"{module}:sometimes", f"{module}:always"], max_steps=1)
    record = make_trainer(tmp_path, config).train().train[-1]
    assert record["rewards/sometimes/mean"] == 2.0
    assert record["rewards/always/mean"] == 1.0
    # Half the completions get 2 + 1, the other half 1 alone.
    assert record["reward"] == pytest.approx(2.0)


def test_all_none_rewards_raise(tmp_path):
    module = _write_reward_module(
        tmp_path, "def nothing(completions, **kwargs):\n    return [None] * len(completions)\n"
    )
    trainer = make_trainer(tmp_path, grpo_config(reward_functions=[f"{module}:nothing"]))
    with pytest.raises(RewardFunctionError, match="every reward function returned None for record"):
        trainer.train()


def test_reserved_reward_column_rejected(tmp_path):
    rows = [{"prompt": "Hi", "completions": "x"}] * 2
    config = grpo_config(reward_columns=["completions"])
    with pytest.raises(ConfigError, match="column 'completions' cannot be passed"):
        make_trainer(tmp_path, config, rows)


# Reference model and iterations


def test_beta_zero_loads_no_reference(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a reference model was built")

    monkeypatch.setattr("pyalign.trainers.grpo.ReferenceModel", fail)
    trainer = make_trainer(tmp_path, grpo_config(beta=0.0, max_steps=1))
    assert trainer.reference is None
    record = trainer.train().train[-1]
    assert "kl" not in record
    assert "entropy" in record
    assert "clip_ratio/region_mean" in record


def test_beta_positive_runs_reference_and_logs_kl(tmp_path):
    trainer = make_trainer(tmp_path, grpo_config(beta=0.1, max_steps=2, learning_rate=1e-2))
    assert trainer.reference is not None
    records = trainer.train().train
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert records[-1]["kl"] > 0


def test_num_iterations_reuses_generation_batch(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, grpo_config(num_iterations=2, max_steps=4, learning_rate=1e-2))
    calls = []
    original = trainer._sample

    def count(data, indices):
        calls.append(list(indices))
        return original(data, indices)

    monkeypatch.setattr(trainer, "_sample", count)
    records = trainer.train().train
    assert len(calls) == 2  # 4 steps, 2 per generation batch
    # The log-probabilities at sampling time are kept as the old policy for the second step.
    _, rollout = trainer._round[0]
    assert rollout.old_logps is not None
    assert all(math.isfinite(record["loss"]) for record in records)


def test_total_steps_count_prompts_not_completions(tmp_path):
    config = grpo_config(max_steps=None, epochs=1, batch_size=4, num_generations=2)
    trainer = make_trainer(tmp_path, config)
    # 4 prompts, 2 prompts per batch of 4 completions.
    assert trainer.total_steps == 2


def test_invalid_batch_size_rejected_by_config():
    with pytest.raises(ConfigError, match="'trainer.batch_size' \\(6\\) must be a multiple"):
        load_config(grpo_config(batch_size=6, num_generations=4))
