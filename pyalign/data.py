"""Read preference datasets and turn them into token batches through the Rust core.

Reading, tokenization and batching run in ``pyalign._core`` with the interpreter released; this
module checks what the trainer needs (columns present, no empty values), splits off a held-out
set, and reports every dropped pair.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pyalign import _core
from pyalign.errors import DataError, MissingColumnError

logger = logging.getLogger(__name__)


@dataclass
class PreferenceColumns:
    """Column names of a preference dataset: the prompt, the chosen and the rejected response."""

    prompt: str
    chosen: str
    rejected: str

    @classmethod
    def from_config(cls, config: dict) -> "PreferenceColumns":
        return cls(
            prompt=config["input_features"][0]["name"],
            chosen=config["output_features"][0]["name"],
            rejected=config["preprocessing"]["rejected_column"],
        )


@dataclass
class PreferenceData:
    """Tokenized preference pairs ready for batching, and what was dropped on the way."""

    source: str
    pairs: "_core.PairDataset"
    num_records: int
    drop_reasons: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_dropped(self) -> int:
        return sum(self.drop_reasons.values())

    def batches(
        self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield batches of ``2P`` rows (chosen first, then rejected) as torch tensors."""
        if shuffle:
            order = torch.randperm(len(self.pairs), generator=generator).numpy()
        else:
            order = np.arange(len(self.pairs))
        for start in range(0, len(order), batch_size):
            indices = np.ascontiguousarray(order[start : start + batch_size], dtype=np.int64)
            arrays = self.pairs.collate(indices)
            # torch.from_numpy shares the buffers that Rust filled; nothing is copied.
            yield {name: torch.from_numpy(array) for name, array in arrays.items()}


def read_preference_records(path: str | Path, columns: PreferenceColumns) -> dict[str, list[str]]:
    """Read the three preference columns of a dataset file, rejecting empty values."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    names = [columns.prompt, columns.chosen, columns.rejected]
    try:
        table = _core.read_table(str(path), names)
    except KeyError as error:
        message = error.args[0] if error.args else str(error)
        raise MissingColumnError(message) from None
    except ValueError as error:
        raise DataError(str(error)) from None

    num_records = len(table[columns.prompt])
    if num_records == 0:
        raise DataError(f"{path}: the dataset has a header but no records")
    # The prompt may be empty (an unconditional pair); a response may not.
    for name in (columns.chosen, columns.rejected):
        for index, text in enumerate(table[name]):
            if not text.strip():
                raise DataError(
                    f"{path}: record {index + 1}: column '{name}' is empty; every pair needs a "
                    "non-empty chosen and rejected response"
                )
    return table


def split_records(
    table: dict[str, list[str]], fraction: float, seed: int
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split a table into train and held-out parts, the held-out part drawn at random by seed."""
    num_records = len(next(iter(table.values())))
    num_held_out = int(round(num_records * fraction))
    if num_held_out == 0 or num_held_out == num_records:
        raise DataError(
            f"preprocessing.validation_fraction={fraction} leaves {num_held_out} of "
            f"{num_records} records for validation; use a fraction that leaves both parts non-empty"
        )
    order = np.random.default_rng(seed).permutation(num_records)
    held_out = np.sort(order[:num_held_out])
    train = np.sort(order[num_held_out:])

    def take(rows: np.ndarray) -> dict[str, list[str]]:
        return {name: [values[row] for row in rows] for name, values in table.items()}

    return take(train), take(held_out)


def tokenize_pairs(
    table: dict[str, list[str]],
    columns: PreferenceColumns,
    tokenizer: "_core.Tokenizer",
    preprocessing: dict,
    source: str,
) -> PreferenceData:
    """Tokenize every pair once, logging how many were dropped and why."""
    pairs = _core.PairDataset(
        tokenizer,
        table[columns.prompt],
        table[columns.chosen],
        table[columns.rejected],
        max_length=preprocessing["max_length"],
        max_prompt_length=preprocessing["max_prompt_length"],
        truncation_mode=preprocessing["truncation_mode"],
    )
    data = PreferenceData(
        source=source,
        pairs=pairs,
        num_records=len(table[columns.prompt]),
        drop_reasons=dict(pairs.drop_reasons),
    )
    if data.num_dropped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in data.drop_reasons.items())
        logger.warning(
            "%s: dropped %d of %d pairs (%s)", source, data.num_dropped, data.num_records, reasons
        )
    if len(data) == 0:
        raise DataError(f"{source}: no pair is left after tokenization and truncation")
    return data
