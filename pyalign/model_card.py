"""Write the ``README.md`` model card of a trained model folder.

The card starts with the YAML metadata block that the Hugging Face hub reads (``library_name``,
``base_model`` when it is a hub id, ``tags``), then states what the model is, how it was trained
(the method and every trainer hyper-parameter of the run config), on which data, the final train
and held-out metrics, and how to load it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from pyalign import __version__
from pyalign.models import HUB_ID_PATTERN, PRESETS

logger = logging.getLogger(__name__)

METHOD_NAMES = {"dpo": "DPO", "kto": "KTO", "orpo": "ORPO", "grpo": "GRPO"}
# Record keys that are positions in the run, not metrics.
NON_METRIC_KEYS = ("step", "epoch")


def write_model_card(
    model_dir: str | Path,
    config: dict[str, Any],
    statistics: dict[str, Any],
    merged: bool = False,
) -> Path:
    """Write ``model_dir/README.md`` for a run and return its path.

    ``merged`` marks a folder of full weights made by merging the run's adapter.
    """
    path = Path(model_dir) / "README.md"
    path.write_text(render_model_card(config, statistics, merged), encoding="utf-8")
    return path


def render_model_card(
    config: dict[str, Any], statistics: dict[str, Any], merged: bool = False
) -> str:
    """Return the model card text of a run."""
    trainer = config["trainer"]
    method = METHOD_NAMES.get(trainer["type"], trainer["type"])
    is_adapter = config.get("adapter") is not None and not merged
    sections = [
        _front_matter(config, method, is_adapter),
        _description(config, method, is_adapter, merged),
        _training_section(config, statistics),
        _data_section(statistics),
        _metrics_section(statistics),
        _usage_section(is_adapter),
    ]
    return "\n".join(section for section in sections if section)


def _front_matter(config: dict[str, Any], method: str, is_adapter: bool) -> str:
    metadata: dict[str, Any] = {"library_name": "peft" if is_adapter else "transformers"}
    if _is_hub_id(config["base_model"]):
        metadata["base_model"] = config["base_model"]
    tags = ["pyalign", method.lower(), "text-generation"]
    if is_adapter:
        tags.append("lora")
    metadata["tags"] = tags
    metadata["pipeline_tag"] = "text-generation"
    return f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n"


def _is_hub_id(base_model: str) -> bool:
    if base_model in PRESETS or base_model.startswith((".", "/", "~")):
        return False
    return bool(HUB_ID_PATTERN.match(base_model)) and not Path(base_model).exists()


def _display_name(base_model: str) -> str:
    """Return a hub id or preset as it is, and a local folder by its name alone."""
    if _is_hub_id(base_model) or base_model in PRESETS:
        return base_model
    return Path(base_model).name or base_model


def _description(config: dict[str, Any], method: str, is_adapter: bool, merged: bool) -> str:
    base_model = _display_name(config["base_model"])
    if is_adapter:
        weights = f"a LoRA adapter for `{base_model}`"
    elif merged:
        weights = f"full weights: `{base_model}` with the LoRA adapter of the run merged in"
    else:
        weights = f"full weights, fine-tuned from `{base_model}`"
    return (
        f"# {method} model from `{base_model}`\n\n"
        f"`{base_model}` aligned with human preferences by {method} with pyalign "
        f"{__version__}. This folder contains {weights}, its tokenizer and this card.\n"
    )


def _training_section(config: dict[str, Any], statistics: dict[str, Any]) -> str:
    trainer = config["trainer"]
    rows = [("method", METHOD_NAMES.get(trainer["type"], trainer["type"]))]
    for key, value in _flatten(trainer):
        if key != "type":
            rows.append((f"trainer.{key}", value))
    adapter = config.get("adapter")
    if adapter is not None:
        for key, value in _flatten(adapter):
            rows.append((f"adapter.{key}", value))
    for key, value in _flatten(config["preprocessing"]):
        rows.append((f"preprocessing.{key}", value))
    summary = statistics.get("summary", {})
    if "total_steps" in summary:
        rows.append(("optimizer steps run", summary["total_steps"]))
    lines = ["## Training", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| `{key}` | {_format_value(value)} |" for key, value in rows]
    return "\n".join(lines) + "\n"


def _flatten(section: dict[str, Any], prefix: str = ""):
    for key, value in section.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "none"
    return str(value)


def _data_section(statistics: dict[str, Any]) -> str:
    summary = statistics.get("summary", {})
    lines = ["## Data", ""]
    for label, file_key, count_key in (
        ("training", "dataset", "train_pairs"),
        ("held-out", "validation_set", "eval_pairs"),
    ):
        name = summary.get(file_key)
        count = summary.get(count_key)
        if name is None and not count:
            continue
        # Only the file name, because a full local path means nothing on another machine.
        shown = f"`{Path(str(name)).name}`" if name else "a split of the training file"
        lines.append(f"- {label}: {shown}" + (f", {count} pairs" if count is not None else ""))
    dropped = summary.get("dropped_pairs") or {}
    for split, reasons in dropped.items():
        if reasons:
            text = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
            lines.append(f"- dropped from {split} during tokenization: {text}")
    if len(lines) == 2:
        lines.append("- not recorded")
    return "\n".join(lines) + "\n"


def _metrics_section(statistics: dict[str, Any]) -> str:
    train = statistics.get("train") or []
    evaluation = statistics.get("eval") or []
    last_train = train[-1] if train else {}
    last_eval = evaluation[-1] if evaluation else {}
    names = [name for name in last_train if name not in NON_METRIC_KEYS]
    for name in last_eval:
        plain = name[len("eval/") :] if name.startswith("eval/") else name
        if plain not in names and plain not in NON_METRIC_KEYS:
            names.append(plain)
    if not names:
        return "## Final metrics\n\nNo metrics were logged.\n"

    train_header = f"train (step {last_train['step']})" if "step" in last_train else "train"
    eval_header = f"held-out (step {last_eval['step']})" if "step" in last_eval else "held-out"
    lines = [
        "## Final metrics",
        "",
        f"| metric | {train_header} | {eval_header} |",
        "| --- | --- | --- |",
    ]
    for name in names:
        lines.append(
            f"| `{name}` | {_format_metric(last_train.get(name))} | "
            f"{_format_metric(last_eval.get('eval/' + name))} |"
        )
    return "\n".join(lines) + "\n"


def _format_metric(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _usage_section(is_adapter: bool) -> str:
    if is_adapter:
        loading = (
            "from peft import AutoPeftModelForCausalLM\n"
            "from transformers import AutoTokenizer\n\n"
            'model = AutoPeftModelForCausalLM.from_pretrained("PATH_OR_REPO_ID")\n'
        )
    else:
        loading = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO_ID")\n'
        )
    loading += 'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO_ID")\n'
    return (
        "## Usage\n\n"
        f"```python\n{loading}```\n\n"
        "From a local folder, pyalign loads it and generates in two lines:\n\n"
        "```python\n"
        "from pyalign import AlignModel\n\n"
        'print(AlignModel.load("PATH").generate(["How do I make tea?"]))\n'
        "```\n"
    )
