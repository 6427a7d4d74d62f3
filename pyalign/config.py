"""Parse, validate and resolve a pyalign config.

A config is a Ludwig-style mapping (``model_type``, ``base_model``, ``adapter``, ``trainer``,
``input_features``, ``output_features``, ``preprocessing``, ``backend``). Every key is either
honoured or rejected: an unknown key raises with its dotted path and the nearest valid key, and a
value of the wrong type raises with its path and the expected type. Validation runs before any
model or dataset is loaded, so a bad config fails in a second.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from pyalign.errors import ConfigError

# Each field is (type name, default, extra check). A default of REQUIRED means the key must be set.
REQUIRED = object()


@dataclass(frozen=True)
class Field:
    kind: str
    default: Any = None
    choices: tuple | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    nullable: bool = False
    check: Callable[[Any, str], None] | None = None


TRAINER_TYPES = ("dpo",)
DPO_LOSS_TYPES = ("sigmoid",)
ADAPTER_TYPES = ("lora",)

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
    "batch_size": Field("int", 2, minimum=1),
    "eval_batch_size": Field("int", None, minimum=1, nullable=True),
    "gradient_accumulation_steps": Field("int", 1, minimum=1),
    "weight_decay": Field("float", 0.0, minimum=0.0),
    "max_grad_norm": Field("float", 1.0, minimum=0.0, nullable=True),
    "beta": Field("float", 0.1, minimum=0.0, exclusive_minimum=True),
    "loss_type": Field("str", "sigmoid", choices=DPO_LOSS_TYPES),
    "seed": Field("int", 42),
    "logging_steps": Field("int", 10, minimum=1),
    "eval_steps": Field("int", None, minimum=1, nullable=True),
}

PREPROCESSING_FIELDS = {
    "max_length": Field("int", 512, minimum=2),
    "max_prompt_length": Field("int", None, minimum=1, nullable=True),
    "truncation_mode": Field("str", "keep_end", choices=("keep_end", "keep_start")),
    "rejected_column": Field("str", "rejected"),
    "validation_fraction": Field("float", 0.0, minimum=0.0, maximum=0.5),
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
    "output_features": Field("features", REQUIRED),
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
    "list[str]": "a list of strings",
    "section": "a mapping",
    "features": "a list of mappings with a 'name'",
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
    for override in overrides:
        _apply_override(raw, override)
    return _validate_section(raw, TOP_LEVEL_FIELDS, prefix="")


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
        raise ConfigError(f"invalid override {override!r}: the value is not valid YAML ({error})") from None
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


def _validate_section(raw: Mapping[str, Any], fields: Mapping[str, Field], prefix: str) -> dict:
    for key in raw:
        if key not in fields:
            _raise_unknown_key(prefix + str(key), str(key), fields)

    resolved = {}
    for key, field in fields.items():
        path = prefix + key
        if key not in raw:
            if field.default is REQUIRED:
                raise ConfigError(f"config key '{path}' is required")
            if field.kind == "section":
                resolved[key] = None if field.nullable else _validate_section({}, field.default, path + ".")
            else:
                resolved[key] = copy.deepcopy(field.default)
            continue
        resolved[key] = _validate_value(raw[key], field, path)
    return resolved


def _validate_value(value: Any, field: Field, path: str) -> Any:
    if value is None:
        if field.nullable:
            return None
        if field.kind == "section":
            return _validate_section({}, field.default, path + ".")
        raise ConfigError(f"config key '{path}' must be {TYPE_NAMES[field.kind]}, got null")

    if field.kind == "section":
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{path}' must be a mapping, got {_type_of(value)}")
        return _validate_section(value, field.default, path + ".")
    if field.kind == "features":
        return _validate_features(value, path)

    value = _coerce(value, field.kind, path)
    if field.choices is not None and value not in field.choices:
        allowed = ", ".join(repr(choice) for choice in field.choices)
        raise ConfigError(f"config key '{path}' has invalid value {value!r}; expected one of {allowed}")
    if field.minimum is not None:
        too_small = value <= field.minimum if field.exclusive_minimum else value < field.minimum
        if too_small:
            relation = "greater than" if field.exclusive_minimum else "at least"
            raise ConfigError(f"config key '{path}' must be {relation} {field.minimum}, got {value}")
    if field.maximum is not None and value > field.maximum:
        raise ConfigError(f"config key '{path}' must be at most {field.maximum}, got {value}")
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
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
        # YAML 1.1 reads 5e-7 (no dot) as a string; accept any text that is a finite number.
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "list[str]":
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
    raise ConfigError(f"config key '{path}' must be {expected}, got {value!r} ({_type_of(value)})")


def _validate_features(value: Any, path: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"config key '{path}' must be a non-empty list of features, got {value!r}")
    if len(value) != 1:
        raise ConfigError(
            f"config key '{path}' lists {len(value)} features; pyalign takes exactly one "
            "(the prompt column as input, the chosen response column as output)"
        )
    features = []
    for index, feature in enumerate(value):
        item_path = f"{path}[{index}]"
        if not isinstance(feature, Mapping):
            raise ConfigError(f"config key '{item_path}' must be a mapping, got {_type_of(feature)}")
        features.append(_validate_section(feature, FEATURE_FIELDS, item_path + "."))
    return features


def _raise_unknown_key(path: str, key: str, fields: Mapping[str, Field]) -> None:
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
