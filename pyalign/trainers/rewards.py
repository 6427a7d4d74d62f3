"""GRPO reward functions: the built-ins, user functions, and scoring a batch of completions.

A reward function is called as TRL 1.16's GRPOTrainer calls one, with keyword lists of one entry
per completion: ``prompts``, ``completions`` (decoded text, without the EOS that ended it),
``completion_ids`` (token ids, ending with EOS when the model emitted one) and every reward
column of the dataset (``trainer.reward_columns``, plus the answer column of ``exact_match``).
It returns one reward per completion: a number, or None where it does not apply.

``trainer.reward_functions`` lists them by name:

- ``exact_match`` (parameter ``answer_column``, default ``answer``): 1.0 when the completion's
  final answer equals the dataset's, else 0.0 (see :func:`final_answer`); None when the
  dataset's answer is empty.
- ``regex_format`` (parameter ``pattern``): 1.0 when ``re.search(pattern, completion)``
  matches, else 0.0; anchor the pattern with ``^`` and ``$`` to require the whole completion.
- ``length`` (parameter ``target``, in tokens): ``-abs(n - target) / target``, where n is the
  completion's token count without its EOS, so the best reward, 0, is at ``target`` tokens.
- ``module:function`` or ``path/to/file.py:function``: a user function.

How rewards combine: a None (or NaN) reward is left out of the weighted sum of its completion's
rewards, as TRL's nansum does. A completion for which every function returns None raises,
because its reward would be undefined.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pyalign.errors import ConfigError, PyAlignError

NUMBER_PATTERN = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


class RewardFunctionError(PyAlignError, RuntimeError):
    """A reward function raised or returned something that is not a list of rewards."""


@dataclass
class RewardFunction:
    """A reward function and the name its metrics are logged under (``rewards/<name>/mean``)."""

    name: str
    function: Callable[..., Sequence[Any]]


def load_reward_functions(
    specs: list[dict[str, Any]], eos_token_id: int | None
) -> list[RewardFunction]:
    """Build the functions of ``trainer.reward_functions`` (as resolved by the config).

    Raises ConfigError when a user function cannot be imported or is not callable.
    """
    functions = []
    for index, spec in enumerate(specs):
        name = spec["name"]
        if name == "exact_match":
            function = exact_match(spec["answer_column"])
        elif name == "regex_format":
            function = regex_format(spec["pattern"])
        elif name == "length":
            function = length(spec["target"], eos_token_id)
        else:
            function = load_user_function(name, f"trainer.reward_functions[{index}]")
            name = name.rpartition(":")[2]
        functions.append(RewardFunction(name=name, function=function))

    # Two functions of the same name get their position appended, so metrics do not collide.
    names = [function.name for function in functions]
    for index, function in enumerate(functions):
        if names.count(function.name) > 1:
            function.name = f"{function.name}_{index}"
    return functions


def load_user_function(name: str, path: str) -> Callable:
    """Import ``module:function`` or ``path/to/file.py:function``."""
    module_name, _, function_name = name.rpartition(":")
    if module_name.endswith(".py"):
        file = Path(module_name).expanduser()
        if not file.is_file():
            raise ConfigError(f"config key '{path}': reward function file not found: {file}")
        spec = importlib.util.spec_from_file_location(f"pyalign_rewards_{file.stem}", file)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise ConfigError(
                f"config key '{path}': importing {file} failed: {type(error).__name__}: {error}"
            ) from error
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            raise ConfigError(
                f"config key '{path}': module '{module_name}' not found ({error}); install it, "
                "add its folder to PYTHONPATH, or name the file as path/to/file.py:function"
            ) from error
    function = getattr(module, function_name, None)
    if function is None:
        raise ConfigError(f"config key '{path}': '{module_name}' has no '{function_name}'")
    if not callable(function):
        raise ConfigError(f"config key '{path}': '{name}' is not callable")
    return function


# Built-in reward functions.


def exact_match(answer_column: str) -> Callable:
    def exact_match(completions, **columns) -> list[float | None]:
        answers = columns[answer_column]
        rewards = []
        for completion, answer in zip(completions, answers):
            expected = reference_answer(answer)
            if expected is None:
                rewards.append(None)
            else:
                rewards.append(1.0 if final_answer(completion) == expected else 0.0)
        return rewards

    return exact_match


def regex_format(pattern: str) -> Callable:
    compiled = re.compile(pattern)

    def regex_format(completions, **_) -> list[float]:
        return [1.0 if compiled.search(completion) else 0.0 for completion in completions]

    return regex_format


def length(target: int, eos_token_id: int | None) -> Callable:
    def length(completion_ids, **_) -> list[float]:
        rewards = []
        for ids in completion_ids:
            count = len(ids)
            if count and eos_token_id is not None and ids[-1] == eos_token_id:
                count -= 1
            rewards.append(-abs(count - target) / target)
        return rewards

    return length


def final_answer(text: str) -> str | None:
    """Return a completion's final answer, normalised, or None when it has none.

    The answer is what follows the last ``####`` (GSM8K's marker): its first number, else its
    first line. Without a marker it is the last number in the text.
    """
    marker = text.rfind("####")
    if marker >= 0:
        tail = text[marker + 4 :].strip()
        number = NUMBER_PATTERN.search(tail)
        if number:
            return normalise_answer(number.group())
        first_line = tail.splitlines()[0] if tail else ""
        return normalise_answer(first_line) if first_line.strip() else None
    numbers = NUMBER_PATTERN.findall(text)
    return normalise_answer(numbers[-1]) if numbers else None


def reference_answer(answer: str) -> str | None:
    """Return the dataset's answer, normalised: the text after ``####`` if any, else all of it."""
    marker = answer.rfind("####")
    text = answer[marker + 4 :] if marker >= 0 else answer
    text = text.strip()
    return normalise_answer(text) if text else None


def normalise_answer(text: str) -> str:
    """Write numbers one way (``1,000.0`` and ``$1000`` become ``1000``); lower-case the rest."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        number = Decimal(cleaned)
    except InvalidOperation:
        return text.strip().lower()
    if not number.is_finite():
        return text.strip().lower()
    normalised = number.normalize()
    # normalize() writes 100 as 1E+2; format it back without an exponent.
    return format(normalised, "f")


# Scoring.


def score_completions(
    functions: list[RewardFunction],
    weights: list[float],
    prompts: list[str],
    completions: list[str],
    completion_ids: list[list[int]],
    columns: dict[str, list[Any]],
    describe_row: Callable[[int], str],
) -> tuple[np.ndarray, np.ndarray]:
    """Call every reward function on a batch of B completions.

    ``describe_row(k)`` names completion k in error messages (its record and prompt). Returns
    the rewards per function, NaN for None, shape (B, F), and their weighted sum, shape (B,).

    Raises RewardFunctionError naming the function and the row when a function raises, returns
    a wrong number of rewards or a value that is not a number, or when every function returns
    None for the same completion.
    """
    rewards = np.full((len(completions), len(functions)), np.nan)  # (B, F)
    arguments = {
        "prompts": prompts,
        "completions": completions,
        "completion_ids": completion_ids,
        **columns,
    }
    for index, reward in enumerate(functions):
        values = _call(reward, arguments, describe_row)
        rewards[:, index] = _to_array(reward, values, len(completions), describe_row)

    missing = np.isnan(rewards).all(axis=1)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise RewardFunctionError(
            f"every reward function returned None for {describe_row(row)}; at least one must "
            "return a number for each completion"
        )
    total = np.nansum(rewards * np.asarray(weights, dtype=np.float64), axis=1)  # (B,)
    return rewards, total


def _call(reward: RewardFunction, arguments: dict[str, list], describe_row) -> Sequence[Any]:
    try:
        return reward.function(**arguments)
    except Exception as error:
        # Find the first row that fails alone, so the message can name it.
        row = _first_failing_row(reward, arguments)
        where = describe_row(row) if row is not None else "a batch (no single row fails alone)"
        raise RewardFunctionError(
            f"reward function '{reward.name}' failed on {where}: {type(error).__name__}: {error}"
        ) from error


def _first_failing_row(reward: RewardFunction, arguments: dict[str, list]) -> int | None:
    for row in range(len(arguments["completions"])):
        single = {name: values[row : row + 1] for name, values in arguments.items()}
        try:
            reward.function(**single)
        except Exception:
            return row
    return None


def _to_array(reward: RewardFunction, values, size: int, describe_row) -> np.ndarray:
    if hasattr(values, "tolist"):  # numpy arrays and torch tensors
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or len(values) != size:
        count = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        raise RewardFunctionError(
            f"reward function '{reward.name}' returned {count} for {size} completions; "
            "it must return a list with one reward (a number or None) per completion"
        )
    array = np.empty(size)
    for row, value in enumerate(values):
        if value is None:
            array[row] = np.nan
        elif isinstance(value, numbers.Real) and not math.isinf(value):
            array[row] = float(value)
        else:
            raise RewardFunctionError(
                f"reward function '{reward.name}' returned {value!r} for {describe_row(row)}; "
                "expected a finite number or None"
            )
    return array
