"""GRPO reward functions: the built-ins, loading user functions, and scoring errors."""

import sys

import numpy as np
import pytest

from pyalign.errors import ConfigError
from pyalign.trainers.rewards import (
    RewardFunction,
    RewardFunctionError,
    final_answer,
    load_reward_functions,
    reference_answer,
    score_completions,
)


def describe(row):
    return f"row {row}"


def score(functions, completions, weights=None, **columns):
    functions = [RewardFunction(name, function) for name, function in functions]
    weights = weights or [1.0] * len(functions)
    prompts = ["p"] * len(completions)
    ids = [[1, 2]] * len(completions)
    return score_completions(functions, weights, prompts, completions, ids, columns, describe)


@pytest.mark.parametrize(
    "completion, answer, reward",
    [
        ("She sells 9 eggs, so 9 * 2 = 18. #### 18", "Janet ... #### 18", 1.0),
        ("The answer is 18.", "#### 18", 1.0),
        ("First 3, then 18, finally 20", "#### 18", 0.0),
        ("#### 1,000", "#### 1000", 1.0),
        ("It costs $1000.00", "#### 1,000", 1.0),
        ("#### -5", "#### -5", 1.0),
        ("no number here", "#### 7", 0.0),
        ("#### 18 apples, not 20", "#### 18", 1.0),
    ],
)
def test_exact_match(completion, answer, reward):
    [function] = load_reward_functions([{"name": "exact_match", "answer_column": "answer"}], 2)
    assert function.function(completions=[completion], answer=[answer]) == [reward]


def test_exact_match_without_reference_answer_is_none():
    [function] = load_reward_functions([{"name": "exact_match", "answer_column": "answer"}], 2)
    assert function.function(completions=["#### 3"], answer=["   "]) == [None]


def test_answer_extraction():
    assert final_answer("so 2 + 2 = 4") == "4"
    assert final_answer("#### 100") == "100"
    assert final_answer("#### forty") == "forty"
    assert final_answer("nothing") is None
    assert reference_answer("work\n#### 72") == "72"
    assert reference_answer("Paris") == "paris"


def test_regex_format_searches_completion():
    spec = [{"name": "regex_format", "pattern": r"\bLily\b"}]
    [function] = load_reward_functions(spec, 2)
    rewards = function.function(completions=["and Lily ran", "Lilypad", "lily"])
    assert rewards == [1.0, 0.0, 0.0]


def test_length_counts_tokens_without_eos():
    [function] = load_reward_functions([{"name": "length", "target": 4}], eos_token_id=2)
    rewards = function.function(completion_ids=[[5, 6, 7, 8, 2], [5, 6], [5, 6, 7, 8, 9, 10]])
    assert rewards == [0.0, -0.5, -0.5]


def test_user_function_from_file_and_module(tmp_path, monkeypatch):
    (tmp_path / "reward_module.py").write_text(
        "def shout(completions, **kwargs):\n    return [float(c.isupper()) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "reward_module", raising=False)
    specs = [{"name": f"{tmp_path / 'reward_module.py'}:shout"}, {"name": "reward_module:shout"}]
    functions = load_reward_functions(specs, 2)
    assert [function.name for function in functions] == ["shout_0", "shout_1"]
    for function in functions:
        assert function.function(completions=["HI", "hi"]) == [1.0, 0.0]


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing_module_xyz:reward", "module 'missing_module_xyz' not found"),
        ("json:no_such_function", "'json' has no 'no_such_function'"),
        ("json:__doc__", "is not callable"),
        ("/does/not/exist.py:reward", "reward function file not found"),
    ],
)
def test_user_function_errors(name, message):
    with pytest.raises(ConfigError, match=message):
        load_reward_functions([{"name": name}], 2)


def test_weighted_sum_with_none():
    functions = [
        ("half", lambda completions, **_: [None, 1.0, 1.0]),
        ("one", lambda completions, **_: [1.0, None, 1.0]),
    ]
    table, total = score(functions, ["a", "b", "c"], weights=[2.0, 0.5])
    assert np.isnan(table[0, 0])
    assert np.isnan(table[1, 1])
    assert total.tolist() == [0.5, 2.0, 2.5]


def test_all_none_names_row():
    functions = [
        ("a", lambda completions, **_: [1.0, None]),
        ("b", lambda completions, **_: [0, None]),
    ]
    with pytest.raises(RewardFunctionError, match="every reward function returned None for row 1"):
        score(functions, ["x", "y"])


def test_raising_function_names_failing_row():
    def fails_on_b(completions, **_):
        return [len(c) / (c != "b") for c in completions]

    with pytest.raises(RewardFunctionError) as error:
        score([("fails_on_b", fails_on_b)], ["a", "b", "c"])
    assert "reward function 'fails_on_b' failed on row 1" in str(error.value)
    assert "ZeroDivisionError" in str(error.value)


def test_function_failing_only_on_whole_batch():
    def batch_only(completions, **_):
        if len(completions) > 1:
            raise RuntimeError("batch too large")
        return [0.0]

    with pytest.raises(RewardFunctionError, match="no single row fails alone"):
        score([("batch_only", batch_only)], ["a", "b"])


@pytest.mark.parametrize(
    "values, message",
    [
        ([1.0], "returned 1 for 2 completions"),
        (3.0, "returned float for 2 completions"),
        ([1.0, "high"], "returned 'high' for row 1"),
        ([1.0, float("inf")], "returned inf for row 1"),
    ],
)
def test_malformed_return_values(values, message):
    with pytest.raises(RewardFunctionError, match=message):
        score([("bad", lambda completions, **_: values)], ["a", "b"])


def test_numpy_and_nan_returns():
    values = np.array([np.float32(0.5), np.nan])
    functions = [("np", lambda completions, **_: values), ("one", lambda completions, **_: [1, 1])]
    table, total = score(functions, ["a", "b"])
    assert table[0, 0] == 0.5
    assert np.isnan(table[1, 0])
    assert total.tolist() == [1.5, 1.0]
