"""Parse, validate and resolve a pyalign config.

A config is a Ludwig-style mapping (``model_type``, ``base_model``, ``adapter``, ``trainer``,
``input_features``, ``output_features``, ``preprocessing``, ``backend``). Every key is either
honoured or rejected: an unknown key raises with its dotted path and the nearest valid key, and a
value of the wrong type raises with its path and the expected type. Validation runs before any
model or dataset is loaded, so a bad config fails in a second.

Some keys apply to one trainer type only (``trainer.desirable_weight`` to KTO, for example).
Their schema is a :class:`ByTrainerType`: a key set for another trainer type is rejected with the
types it applies to, and the resolved config holds only the keys of its own type, so a saved
``config.yaml`` loads again unchanged.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from pyalign.errors import ConfigError

# The default of a key that the user must set.
REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """The schema of one config key: its kind, default and allowed values."""

    kind: str
    default: Any = None
    choices: tuple | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    exclusive_maximum: bool = False
    nullable: bool = False


@dataclass(frozen=True)
class ByTrainerType:
    """The schema of a key that exists for some trainer types only, one Field per type."""

    fields: Mapping[str, Field]

    def for_type(self, trainer_type: str) -> Field | None:
        return self.fields.get(trainer_type)

    def describe_types(self) -> str:
        names = [f"'{name}'" for name in TRAINER_TYPES if name in self.fields]
        if len(names) == 1:
            return names[0]
        return ", ".join(names[:-1]) + " and " + names[-1]


TRAINER_TYPES = ("dpo", "kto", "orpo", "grpo")
DPO_LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge", "simpo", "cpo")
# DPO loss types that compare the policy's chosen and rejected responses without a reference
# model, so none is loaded for them.
REFERENCE_FREE_DPO_LOSS_TYPES = ("simpo", "cpo")
# DPO loss types with a label smoothing term.
SMOOTHED_DPO_LOSS_TYPES = ("sigmoid", "robust", "simpo", "cpo")
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
GRPO_SCALE_REWARDS = ("group", "batch", "none")
ADAPTER_TYPES = ("lora",)
PREFERENCE_TYPES = ("dpo", "orpo")

# Parameters of the built-in GRPO reward functions, by name. A reward function given as
# "module:function" or "path/to/file.py:function" takes no parameters.
REWARD_FUNCTION_FIELDS = {
    "exact_match": {"answer_column": Field("str", "answer")},
    "regex_format": {"pattern": Field("str", REQUIRED)},
    "length": {"target": Field("int", REQUIRED, minimum=1)},
}

ADAPTER_FIELDS = {
    "type": Field("str", REQUIRED, choices=ADAPTER_TYPES),
    "r": Field("int", 8, minimum=1),
    "alpha": Field("int", 16, minimum=1),
    "dropout": Field("float", 0.05, minimum=0.0, maximum=1.0),
    "target_modules": Field("list[str]", None, nullable=True),
    "bias_type": Field("str", "none", choices=("none", "all", "lora_only")),
}

SCHEDULER_FIELDS = {
    "decay": Field("str", "none", choices=("none", "linear", "cosine"), nullable=True),
    "warmup_fraction": Field("float", 0.0, minimum=0.0, maximum=1.0),
}

TRAINER_FIELDS = {
    "type": Field("str", REQUIRED, choices=TRAINER_TYPES),
    "epochs": Field("int", 1, minimum=1),
    "max_steps": Field("int", None, minimum=1, nullable=True),
    "learning_rate": Field("float", 1.0e-6, minimum=0.0, exclusive_minimum=True),
    "learning_rate_scheduler": Field("section", SCHEDULER_FIELDS),
    # GRPO's batch_size counts completions, so its default is one group of 8 generations.
    "batch_size": ByTrainerType(
        {
            **{name: Field("int", 2, minimum=1) for name in ("dpo", "kto", "orpo")},
            "grpo": Field("int", 8, minimum=1),
        }
    ),
    "eval_batch_size": Field("int", None, minimum=1, nullable=True),
    "gradient_accumulation_steps": Field("int", 1, minimum=1),
    "weight_decay": Field("float", 0.0, minimum=0.0),
    "max_grad_norm": Field("float", 1.0, minimum=0.0, nullable=True),
    "seed": Field("int", 42),
    "logging_steps": Field("int", 10, minimum=1),
    "eval_steps": Field("int", None, minimum=1, nullable=True),
    # Where logged metrics go besides the log and training_statistics.json: "tensorboard".
    # Checked with the reason in pyalign.report.check_report_to.
    "report_to": Field("list[str]", []),
    # Keys of one or a few trainer types. Names and defaults follow TRL 1.16 where TRL has the key.
    "beta": ByTrainerType(
        {
            "dpo": Field("float", 0.1, minimum=0.0, exclusive_minimum=True),
            "kto": Field("float", 0.1, minimum=0.0, exclusive_minimum=True),
            "orpo": Field("float", 0.1, minimum=0.0, exclusive_minimum=True),
            "grpo": Field("float", 0.0, minimum=0.0),
        }
    ),
    "loss_type": ByTrainerType(
        {
            "dpo": Field("str", "sigmoid", choices=DPO_LOSS_TYPES),
            "grpo": Field("str", "dapo", choices=GRPO_LOSS_TYPES),
        }
    ),
    "label_smoothing": ByTrainerType(
        {"dpo": Field("float", 0.0, minimum=0.0, maximum=0.5, exclusive_maximum=True)}
    ),
    "simpo_gamma": ByTrainerType({"dpo": Field("float", None, minimum=0.0, nullable=True)}),
    "rpo_alpha": ByTrainerType({"dpo": Field("float", None, minimum=0.0, nullable=True)}),
    "desirable_weight": ByTrainerType(
        {"kto": Field("float", 1.0, minimum=0.0, exclusive_minimum=True)}
    ),
    "undesirable_weight": ByTrainerType(
        {"kto": Field("float", 1.0, minimum=0.0, exclusive_minimum=True)}
    ),
    # Must be at least 2, which _check_grpo_keys checks with the reason.
    "num_generations": ByTrainerType({"grpo": Field("int", 8)}),
    "max_completion_length": ByTrainerType({"grpo": Field("int", 256, minimum=1)}),
    "temperature": ByTrainerType(
        {"grpo": Field("float", 1.0, minimum=0.0, exclusive_minimum=True)}
    ),
    "top_p": ByTrainerType(
        {"grpo": Field("float", 1.0, minimum=0.0, exclusive_minimum=True, maximum=1.0)}
    ),
    "mask_truncated_completions": ByTrainerType({"grpo": Field("bool", False)}),
    "num_iterations": ByTrainerType({"grpo": Field("int", 1, minimum=1)}),
    "epsilon": ByTrainerType(
        {
            "grpo": Field(
                "float",
                0.2,
                minimum=0.0,
                exclusive_minimum=True,
                maximum=1.0,
                exclusive_maximum=True,
            )
        }
    ),
    "epsilon_high": ByTrainerType(
        {"grpo": Field("float", None, minimum=0.0, exclusive_minimum=True, nullable=True)}
    ),
    "scale_rewards": ByTrainerType({"grpo": Field("str", "group", choices=GRPO_SCALE_REWARDS)}),
    "reward_functions": ByTrainerType({"grpo": Field("reward_functions", REQUIRED)}),
    "reward_weights": ByTrainerType({"grpo": Field("list[float]", None, nullable=True)}),
    "reward_columns": ByTrainerType({"grpo": Field("list[str]", [])}),
}

PREPROCESSING_FIELDS = {
    "max_length": ByTrainerType(
        {name: Field("int", 512, minimum=2) for name in ("dpo", "kto", "orpo")}
    ),
    "max_prompt_length": Field("int", None, minimum=1, nullable=True),
    "truncation_mode": Field("str", "keep_end", choices=("keep_end", "keep_start")),
    "rejected_column": ByTrainerType({name: Field("str", "rejected") for name in PREFERENCE_TYPES}),
    "label_column": ByTrainerType({"kto": Field("str", "label")}),
    "validation_fraction": Field("float", 0.0, minimum=0.0, maximum=0.5),
    # true renders conversational prompts with the tokenizer's own chat template; a string is
    # the Jinja template text itself.
    "chat_template": ByTrainerType(
        {name: Field("bool|str", False) for name in ("dpo", "kto", "orpo")}
    ),
}

BACKEND_FIELDS = {
    "type": Field("str", "local", choices=("local",)),
    "kernels": Field("str", "native", choices=("native", "torch")),
}

FEATURE_FIELDS = {
    "name": Field("str", REQUIRED),
    "type": Field("str", "text", choices=("text",)),
}

TOP_LEVEL_FIELDS = {
    "model_type": Field("str", "llm", choices=("llm",)),
    "base_model": Field("str", REQUIRED),
    "adapter": Field("section", ADAPTER_FIELDS, nullable=True),
    "trainer": Field("section", TRAINER_FIELDS),
    "input_features": Field("features", REQUIRED),
    # GRPO samples its completions, so its dataset has no response column.
    "output_features": ByTrainerType(
        {name: Field("features", REQUIRED) for name in ("dpo", "kto", "orpo")}
    ),
    "preprocessing": Field("section", PREPROCESSING_FIELDS),
    "backend": Field("section", BACKEND_FIELDS),
    "dataset": Field("str", None, nullable=True),
    "validation_set": Field("str", None, nullable=True),
}

TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "bool|str": "true, false or a Jinja template string",
    "list[str]": "a list of strings",
    "list[float]": "a list of numbers",
    "section": "a mapping",
    "features": "a list of mappings with a 'name'",
    "reward_functions": "a non-empty list of reward function names or mappings with a 'name'",
}


def load_config(
    source: str | Path | Mapping[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """Load a config from a YAML path or a mapping, apply overrides, validate, fill in defaults.

    Relative ``dataset`` and ``validation_set`` paths written in a YAML file resolve against the
    file's folder, so a config runs from any working directory. Each override is ``KEY=VALUE``
    with KEY a dotted path (``trainer.max_steps``) and VALUE parsed as YAML, so ``20`` is an
    integer, ``null`` is None and ``[q_proj, v_proj]`` is a list.
    """
    raw = read_raw_config(source)
    if not isinstance(source, Mapping):
        base_dir = Path(source).parent
        for key in ("dataset", "validation_set"):
            value = raw.get(key)
            if isinstance(value, str) and not Path(value).is_absolute():
                raw[key] = str(base_dir / value)
        _resolve_reward_files(raw, base_dir)
    for override in overrides:
        _apply_override(raw, override)
    trainer_type = _read_trainer_type(raw)
    resolved = _validate_section(raw, TOP_LEVEL_FIELDS, prefix="", trainer_type=trainer_type)
    _check_trainer_combinations(resolved["trainer"])
    return resolved


def _resolve_reward_files(raw: dict[str, Any], base_dir: Path) -> None:
    """Make relative ``path/to/file.py:function`` reward functions relative to the config file."""
    trainer = raw.get("trainer")
    specs = trainer.get("reward_functions") if isinstance(trainer, dict) else None
    if not isinstance(specs, list):
        return
    for index, spec in enumerate(specs):
        name = spec.get("name") if isinstance(spec, dict) else spec
        if not isinstance(name, str):
            continue
        module, separator, function = name.rpartition(":")
        if not separator or not module.endswith(".py"):
            continue
        module_path = Path(module).expanduser()
        if module_path.is_absolute():
            continue
        resolved = f"{base_dir / module_path}:{function}"
        if isinstance(spec, dict):
            spec["name"] = resolved
        else:
            specs[index] = resolved


def read_raw_config(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Return the config as written, without validation."""
    if isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: the config file is not valid UTF-8") from None
        if raw is None:
            raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {_type_of(raw)}")
    return raw


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, separator, text = override.partition("=")
    if not separator or not key:
        raise ConfigError(
            f"invalid override {override!r}: expected KEY=VALUE, such as trainer.max_steps=20"
        )
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"invalid override {override!r}: the value is not valid YAML ({error})"
        ) from None
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"invalid override {override!r}: '{part}' is not a mapping")
        node = child
    node[parts[-1]] = value


def dump_config(config: Mapping[str, Any]) -> str:
    """Render a resolved config as YAML, keys in schema order."""
    return yaml.safe_dump(dict(config), sort_keys=False)


def _read_trainer_type(raw: Mapping[str, Any]) -> str:
    """Validate ``trainer.type`` first, because the keys allowed elsewhere depend on it."""
    trainer = raw.get("trainer")
    if trainer is None:
        raise ConfigError("config key 'trainer.type' is required")
    if not isinstance(trainer, Mapping):
        raise ConfigError(f"config key 'trainer' must be a mapping, got {_type_of(trainer)}")
    if "type" not in trainer:
        raise ConfigError("config key 'trainer.type' is required")
    return _validate_value(trainer["type"], TRAINER_FIELDS["type"], "trainer.type", None)


def _fields_for_type(fields: Mapping[str, Any], trainer_type: str | None) -> dict[str, Field]:
    resolved = {}
    for key, field in fields.items():
        if isinstance(field, ByTrainerType):
            field = field.for_type(trainer_type)
            if field is None:
                continue
        resolved[key] = field
    return resolved


def _validate_section(
    raw: Mapping[str, Any], fields: Mapping[str, Any], prefix: str, trainer_type: str | None
) -> dict:
    own_fields = _fields_for_type(fields, trainer_type)
    for key in raw:
        if key in own_fields:
            continue
        schema = fields.get(key)
        if isinstance(schema, ByTrainerType):
            raise ConfigError(
                f"config key '{prefix}{key}' applies to trainer.type {schema.describe_types()} "
                f"only; this config has trainer.type '{trainer_type}'"
            )
        _raise_unknown_key(prefix + str(key), str(key), own_fields)

    resolved = {}
    for key, field in own_fields.items():
        path = prefix + key
        if key not in raw:
            if field.default is REQUIRED:
                raise ConfigError(f"config key '{path}' is required")
            if field.kind == "section":
                resolved[key] = (
                    None
                    if field.nullable
                    else _validate_section({}, field.default, path + ".", trainer_type)
                )
            else:
                resolved[key] = copy.deepcopy(field.default)
            continue
        resolved[key] = _validate_value(raw[key], field, path, trainer_type)
    return resolved


def _validate_value(value: Any, field: Field, path: str, trainer_type: str | None) -> Any:
    if value is None:
        if field.nullable:
            return None
        if field.kind == "section":
            return _validate_section({}, field.default, path + ".", trainer_type)
        raise ConfigError(f"config key '{path}' must be {TYPE_NAMES[field.kind]}, got null")

    if field.kind == "section":
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{path}' must be a mapping, got {_type_of(value)}")
        return _validate_section(value, field.default, path + ".", trainer_type)
    if field.kind == "features":
        return _validate_features(value, path)
    if field.kind == "reward_functions":
        return _validate_reward_functions(value, path)

    value = _coerce(value, field.kind, path)
    if field.choices is not None and value not in field.choices:
        allowed = ", ".join(repr(choice) for choice in field.choices)
        raise ConfigError(
            f"config key '{path}' has invalid value {value!r}; expected one of {allowed}"
        )
    if field.minimum is not None:
        too_small = value <= field.minimum if field.exclusive_minimum else value < field.minimum
        if too_small:
            relation = "greater than" if field.exclusive_minimum else "at least"
            raise ConfigError(
                f"config key '{path}' must be {relation} {field.minimum}, got {value}"
            )
    if field.maximum is not None:
        too_large = value >= field.maximum if field.exclusive_maximum else value > field.maximum
        if too_large:
            relation = "less than" if field.exclusive_maximum else "at most"
            raise ConfigError(
                f"config key '{path}' must be {relation} {field.maximum}, got {value}"
            )
    return value


def _coerce(value: Any, kind: str, path: str) -> Any:
    expected = TYPE_NAMES[kind]
    if kind == "str":
        if isinstance(value, str):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "float":
        number = _coerce_number(value)
        if number is not None:
            return number
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "bool|str":
        if isinstance(value, (bool, str)):
            return value
    elif kind == "list[str]":
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
    elif kind == "list[float]":
        if isinstance(value, list):
            numbers = [_coerce_number(item) for item in value]
            if all(number is not None for number in numbers):
                return numbers
    raise ConfigError(f"config key '{path}' must be {expected}, got {value!r} ({_type_of(value)})")


def _coerce_number(value: Any) -> float | None:
    """Return ``value`` as a finite float, or None when it is not a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    # YAML 1.1 reads 5e-7 (no dot) as a string; accept any text that is a finite number.
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _validate_features(value: Any, path: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"config key '{path}' must be a non-empty list of features, got {value!r}"
        )
    if len(value) != 1:
        raise ConfigError(
            f"config key '{path}' lists {len(value)} features; pyalign takes exactly one "
            "(the prompt column as input, the chosen response column as output)"
        )
    features = []
    for index, feature in enumerate(value):
        item_path = f"{path}[{index}]"
        if not isinstance(feature, Mapping):
            raise ConfigError(
                f"config key '{item_path}' must be a mapping, got {_type_of(feature)}"
            )
        features.append(_validate_section(feature, FEATURE_FIELDS, item_path + ".", None))
    return features


def _validate_reward_functions(value: Any, path: str) -> list[dict]:
    """Resolve each reward function to a mapping ``{name: ..., <parameters>}``.

    An entry is a name (``exact_match``, ``module:function``, ``path/to/file.py:function``) or a
    mapping with a ``name`` and the parameters of a built-in function.
    """
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"config key '{path}' must be {TYPE_NAMES['reward_functions']}, got {value!r}"
        )
    resolved = []
    for index, entry in enumerate(value):
        item_path = f"{path}[{index}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ConfigError(
                f"config key '{item_path}' must be a reward function name or a mapping with a "
                f"'name', got {entry!r}"
            )
        name = entry["name"]
        if name in REWARD_FUNCTION_FIELDS:
            fields = {"name": Field("str", REQUIRED), **REWARD_FUNCTION_FIELDS[name]}
            spec = _validate_section(entry, fields, item_path + ".", None)
            if name == "regex_format":
                _check_pattern(spec["pattern"], item_path + ".pattern")
        elif _is_import_path(name):
            extra = [key for key in entry if key != "name"]
            if extra:
                raise ConfigError(
                    f"config key '{item_path}.{extra[0]}' is not a parameter of the user reward "
                    f"function '{name}'; user functions take no parameters from the config "
                    "(bind them in your module, e.g. with functools.partial)"
                )
            spec = {"name": name}
        else:
            builtins = ", ".join(REWARD_FUNCTION_FIELDS)
            raise ConfigError(
                f"config key '{item_path}.name' has invalid value {name!r}; expected a built-in "
                f"reward function ({builtins}), 'module:function' or 'path/to/file.py:function'"
            )
        resolved.append(spec)
    return resolved


def _is_import_path(name: str) -> bool:
    module, separator, function = name.rpartition(":")
    return bool(separator and module and function.isidentifier())


def _check_pattern(pattern: str, path: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ConfigError(
            f"config key '{path}' is not a valid regular expression: {error}"
        ) from None


def _check_trainer_combinations(trainer: dict[str, Any]) -> None:
    """Check the trainer keys that constrain each other, and fill defaults that depend on others."""
    if trainer["type"] == "dpo":
        _check_dpo_keys(trainer)
    elif trainer["type"] == "grpo":
        _check_grpo_keys(trainer)


def _check_dpo_keys(trainer: dict[str, Any]) -> None:
    loss_type = trainer["loss_type"]
    if trainer["label_smoothing"] != 0.0 and loss_type not in SMOOTHED_DPO_LOSS_TYPES:
        allowed = ", ".join(f"'{name}'" for name in SMOOTHED_DPO_LOSS_TYPES)
        raise ConfigError(
            f"config key 'trainer.label_smoothing' applies to trainer.loss_type {allowed} only; "
            f"this config has loss_type '{loss_type}' (remove the key or set it to 0)"
        )
    if loss_type == "simpo":
        if trainer["simpo_gamma"] is None:
            trainer["simpo_gamma"] = 0.5
    elif trainer["simpo_gamma"] is not None:
        raise ConfigError(
            f"config key 'trainer.simpo_gamma' applies to trainer.loss_type 'simpo' only; "
            f"this config has loss_type '{loss_type}'"
        )


def _check_grpo_keys(trainer: dict[str, Any]) -> None:
    num_generations = trainer["num_generations"]
    if num_generations < 2:
        raise ConfigError(
            f"config key 'trainer.num_generations' must be at least 2, got {num_generations}: "
            "GRPO's advantage compares the completions of one prompt with each other"
        )
    for key in ("batch_size", "eval_batch_size"):
        size = trainer[key]
        if size is not None and size % num_generations != 0:
            raise ConfigError(
                f"config key 'trainer.{key}' ({size}) must be a multiple of "
                f"trainer.num_generations ({num_generations}): for GRPO it counts completions, "
                "and each batch holds whole groups of completions of the same prompts"
            )
    weights = trainer["reward_weights"]
    num_functions = len(trainer["reward_functions"])
    if weights is not None and len(weights) != num_functions:
        raise ConfigError(
            f"config key 'trainer.reward_weights' has {len(weights)} weights for "
            f"{num_functions} reward functions; give one weight per function"
        )


# Ludwig LLM config keys that pyalign does not implement, with the reason given to the user.
UNSUPPORTED_LUDWIG_KEYS = {
    "quantization": "4- and 8-bit quantization is not supported; pyalign trains float32 weights",
    "hyperopt": "hyper-parameter search is not supported; run one config per setting",
    "model_parameters": "model_parameters (rope scaling and the like) is not supported",
}


def _raise_unknown_key(path: str, key: str, fields: Mapping[str, Field]) -> None:
    if path in UNSUPPORTED_LUDWIG_KEYS:
        raise ConfigError(f"config key '{path}': {UNSUPPORTED_LUDWIG_KEYS[path]}; remove it")
    nearest = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
    parent = path[: -len(key)]
    if nearest:
        hint = f"did you mean '{parent}{nearest[0]}'?"
    else:
        hint = "valid keys here: " + ", ".join(fields)
    raise ConfigError(f"unknown config key '{path}'; {hint}")


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__
