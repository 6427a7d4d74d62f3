"""Save, load and merge the model folders that ``pyalign train`` writes.

A model folder (``results/<run>/model/``) contains either a LoRA adapter (``adapter_config.json``
and ``adapter_model.safetensors``) or full weights (``config.json`` and ``model.safetensors``),
plus the tokenizer and a ``README.md`` model card. Its run folder, one level up, contains the
resolved ``config.yaml`` and ``training_statistics.json``.

When training added tokens (a pad token, chat markers), the embedding matrix has more rows than
the base model's. The adapter then stores the whole resized embedding (and an untied LM head),
so loading resizes the base model to the saved number of rows before attaching the adapter.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from pyalign.errors import ConfigError, ModelNotFoundError
from pyalign.models import load_model, resolve_base_model

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_CARD = "README.md"
RUN_CONFIG = "config.yaml"
TRAINING_STATISTICS = "training_statistics.json"


def resolve_model_dir(path: str | Path) -> Path:
    """Return the model folder for ``path``: the folder itself, or ``model/`` of a run folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"model folder not found: {path}")
    if not path.is_dir():
        raise ModelNotFoundError(f"{path} is a file; expected a model folder or a run folder")
    if not _contains_weights(path) and _contains_weights(path / "model"):
        return path / "model"
    if not _contains_weights(path):
        raise ModelNotFoundError(
            f"{path} contains no model: expected {ADAPTER_CONFIG} (a LoRA adapter) or config.json "
            "(full weights), as in the model/ folder of a pyalign run"
        )
    return path


def _contains_weights(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file() or (folder / "config.json").is_file()


def is_adapter_folder(model_dir: Path) -> bool:
    return (Path(model_dir) / ADAPTER_CONFIG).is_file()


def run_folder(model_dir: Path) -> Path | None:
    """Return the run folder of a model folder: its parent, if that contains ``config.yaml``."""
    parent = Path(model_dir).resolve().parent
    return parent if (parent / RUN_CONFIG).is_file() else None


def read_run_config(model_dir: Path) -> dict[str, Any] | None:
    """Load and validate the run's ``config.yaml`` beside the model folder, if there is one."""
    from pyalign.config import load_config

    folder = run_folder(model_dir)
    return load_config(folder / RUN_CONFIG) if folder is not None else None


def read_training_statistics(model_dir: Path) -> dict[str, Any] | None:
    folder = run_folder(model_dir)
    if folder is None or not (folder / TRAINING_STATISTICS).is_file():
        return None
    return json.loads((folder / TRAINING_STATISTICS).read_text(encoding="utf-8"))


def base_model_of(model_dir: Path, run_config: dict[str, Any] | None = None) -> str:
    """Return the loadable base model of a model folder.

    An adapter names its base in ``adapter_config.json``; a full-weights folder has no base of
    its own, so its run config's ``base_model`` is used. Raises ModelNotFoundError when neither
    names a base model that can be found.
    """
    candidates = []
    if is_adapter_folder(model_dir):
        adapter_config = json.loads((model_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        if adapter_config.get("base_model_name_or_path"):
            candidates.append(adapter_config["base_model_name_or_path"])
    if run_config is not None:
        candidates.append(run_config["base_model"])
    failures = []
    for candidate in candidates:
        try:
            return resolve_base_model(candidate)
        except (ModelNotFoundError, ConfigError) as error:
            failures.append(str(error))
    if not candidates:
        raise ModelNotFoundError(
            f"{model_dir} names no base model: it has no {ADAPTER_CONFIG} and no run "
            f"{RUN_CONFIG} beside it; pass the reference model explicitly"
        )
    raise ModelNotFoundError(f"base model of {model_dir} not found: {'; '.join(failures)}")


def load_trained_model(model_dir: Path, dtype: torch.dtype = torch.float32):
    """Load a model folder as a ``PeftModel`` (adapter) or a plain causal LM (full weights)."""
    model_dir = Path(model_dir)
    if not is_adapter_folder(model_dir):
        return load_model(str(model_dir), dtype=dtype)

    from peft import PeftModel

    base = load_model(base_model_of(model_dir, read_run_config(model_dir)), dtype=dtype)
    saved_rows = saved_embedding_rows(model_dir, base)
    current_rows = base.get_input_embeddings().weight.shape[0]
    if saved_rows is not None and saved_rows != current_rows:
        # The saved rows replace these, so the new rows need no mean initialisation.
        logger.info("resizing the base embeddings from %d to %d rows", current_rows, saved_rows)
        base.resize_token_embeddings(saved_rows, mean_resizing=False)
    return PeftModel.from_pretrained(base, model_dir)


def saved_embedding_rows(model_dir: Path, base) -> int | None:
    """Return the rows of the input embedding stored in an adapter, or None if it stores none."""
    from safetensors import safe_open

    weights = model_dir / "adapter_model.safetensors"
    if not weights.is_file():
        return None
    embedding = base.get_input_embeddings()
    names = [name for name, module in base.named_modules() if module is embedding]
    if not names:
        return None
    suffix = f"{names[0]}.weight"
    with safe_open(str(weights), framework="pt") as tensors:
        for key in tensors.keys():
            if key.endswith(suffix) and "lora_" not in key:
                return tensors.get_slice(key).get_shape()[0]
    return None


def embeddings_resized(model, base_model_path: str) -> bool:
    """Return True when ``model``'s embedding has another row count than the base model's."""
    from transformers import AutoConfig

    base_vocab_size = AutoConfig.from_pretrained(base_model_path).vocab_size
    return model.get_input_embeddings().weight.shape[0] != base_vocab_size


def save_model_weights(model, model_dir: Path, base_model_path: str) -> None:
    """Save an adapter, with the whole embedding when it was resized, or full weights."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        # Decided here rather than by peft's "auto", which may query the hub for a hub id.
        resized = embeddings_resized(model, base_model_path)
        model.save_pretrained(model_dir, save_embedding_layers=resized)
    else:
        model.save_pretrained(model_dir, safe_serialization=True)


def save_tokenizer(model_dir: Path, base_model_path: str, tokenizer=None) -> None:
    """Write the tokenizer used in training to ``model_dir``.

    ``tokenizer`` is a transformers tokenizer that training changed (added tokens, a chat
    template); without one, the base model's tokenizer files are copied unchanged.
    """
    if tokenizer is not None:
        tokenizer.save_pretrained(model_dir)
        return
    source = Path(base_model_path)
    if source.is_dir():
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, model_dir / name)
        return
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(base_model_path).save_pretrained(model_dir)


def export_model(model_dir: str | Path, output_dir: str | Path, merge: bool = False) -> Path:
    """Copy a model folder to ``output_dir``; with ``merge``, fold a LoRA adapter into the base.

    The merged folder contains full weights in safetensors, the tokenizer and a model card, and no
    adapter file. ``output_dir`` must not exist or be empty. Returns ``output_dir``.
    """
    model_dir = resolve_model_dir(model_dir)
    output_dir = Path(output_dir)
    _check_output_dir(model_dir, output_dir)

    if not merge or not is_adapter_folder(model_dir):
        if merge:
            logger.info("%s contains full weights already; copying it unchanged", model_dir)
        shutil.copytree(model_dir, output_dir, dirs_exist_ok=True)
        return output_dir

    model = load_trained_model(model_dir)
    merged = model.merge_and_unload()
    output_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(output_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, output_dir / name)
    _write_merged_card(model_dir, output_dir)

    leftovers = [
        name for name in (ADAPTER_CONFIG, *ADAPTER_WEIGHT_FILES) if (output_dir / name).exists()
    ]
    if leftovers:
        raise RuntimeError(f"merging left adapter files in {output_dir}: {', '.join(leftovers)}")
    logger.info("merged the adapter of %s into full weights in %s", model_dir, output_dir)
    return output_dir


def _check_output_dir(model_dir: Path, output_dir: Path) -> None:
    if output_dir.resolve() == model_dir.resolve():
        raise ValueError(f"the export folder {output_dir} is the model folder itself; pick another")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ValueError(
            f"export folder {output_dir} exists and is not empty; pass a new or empty folder"
        )


def _write_merged_card(model_dir: Path, output_dir: Path) -> None:
    from pyalign.model_card import write_model_card

    run_config = read_run_config(model_dir)
    statistics = read_training_statistics(model_dir)
    if run_config is not None and statistics is not None:
        write_model_card(output_dir, run_config, statistics, merged=True)
    elif (model_dir / MODEL_CARD).is_file():
        # NOTE: without the run folder the card cannot be rebuilt. It still describes the
        # adapter, with one line added to say that the weights were merged.
        text = (model_dir / MODEL_CARD).read_text(encoding="utf-8")
        note = "\n\nThe LoRA adapter described above was merged into the base weights.\n"
        (output_dir / MODEL_CARD).write_text(text.rstrip() + note, encoding="utf-8")
