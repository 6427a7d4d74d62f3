"""Prepare preference datasets for training: Anthropic HH-RLHF to CSV through the Rust converter.

``pyalign prepare hh-rlhf --output_dir data/`` writes ``train.csv`` (DPO: ``prompt``,
``chosen``, ``rejected``) and, with ``--format kto`` or ``both``, ``train_kto.csv`` (KTO:
``prompt``, ``response``, ``label``), plus ``test.csv`` and ``test_kto.csv`` where the source
has a test split. Splitting the conversations runs in ``pyalign._core.convert_hh_rlhf``.

The input is one of:

- a local ``.jsonl``, ``.jsonl.gz``, ``.json`` or ``.json.gz`` file of HH-RLHF records: it
  becomes the train split, whatever its name, and no test files are written;
- a local folder holding ``train.jsonl[.gz]`` and optionally ``test.jsonl[.gz]`` (the layout of
  each subset folder of the Anthropic/hh-rlhf repository): each file becomes its split;
- a dataset id on the Hugging Face hub (default ``Anthropic/hh-rlhf``), read with the
  ``datasets`` library, with its ``train`` and ``test`` splits.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pyalign import _core
from pyalign.errors import DataError, MissingColumnError

logger = logging.getLogger(__name__)

DEFAULT_HH_RLHF_DATASET = "Anthropic/hh-rlhf"
FORMATS = ("dpo", "kto", "both")
PROMPT_MODES = ("last-turn", "full-context")
DEFAULT_PROMPT_MODE = "last-turn"
SPLITS = ("train", "test")
# File names looked up for each split inside a local folder, in this order.
SPLIT_FILE_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")
RECORD_FILE_SUFFIXES = SPLIT_FILE_SUFFIXES
# The output file of each converter format; a split named "test" writes test.csv, and so on.
OUTPUT_FILE_PATTERNS = {"dpo": "{split}.csv", "kto": "{split}_kto.csv"}


@dataclass
class ConvertedFile:
    """The counts of one converted file, as ``_core.convert_hh_rlhf`` returns them."""

    split: str
    format: str
    source: str
    output: Path
    read: int
    kept: int
    written: int
    skipped: int
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """Return a one-line summary: counts, then each skip reason with its count."""
        line = (
            f"read {self.read} records, kept {self.kept}, wrote {self.written} rows, "
            f"skipped {self.skipped}"
        )
        if self.skip_reasons:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skip_reasons.items())
            line += f" ({reasons})"
        return line


@dataclass
class PrepareSummary:
    """Every file that one ``prepare`` call wrote, in the order written."""

    output_dir: Path
    files: list[ConvertedFile]

    def to_dict(self) -> dict:
        return {
            "output_dir": str(self.output_dir),
            "files": [{**file.__dict__, "output": str(file.output)} for file in self.files],
        }


def prepare_hh_rlhf(
    output_dir: str | Path,
    input: str | Path | None = None,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    format: str = "dpo",
    prompt: str = DEFAULT_PROMPT_MODE,
    data_dir: str | None = None,
    skip_bad_records: bool = False,
) -> PrepareSummary:
    """Convert HH-RLHF conversations into training files under ``output_dir``.

    Args:
        output_dir: the folder to write to; created if absent. Existing files are replaced.
        input: a local file or folder, or a hub dataset id; None means ``Anthropic/hh-rlhf``.
        max_train_samples, max_test_samples: stop each split after that many kept pairs.
        format: ``"dpo"``, ``"kto"`` or ``"both"``.
        prompt: ``"last-turn"`` (the last human turn) or ``"full-context"`` (the whole
            conversation before the last assistant turn).
        data_dir: for a hub dataset id, the subset folder to read, e.g. ``"harmless-base"``.
        skip_bad_records: count malformed records (no final assistant turn, no shared prompt)
            as skipped instead of stopping at the first, where the converter supports it.

    Raises:
        ValueError: an invalid argument, or a split in which no record could be converted.
        FileNotFoundError: a local input that does not exist.
        KeyError: a record without ``chosen`` or ``rejected``.
    """
    _check_arguments(format, prompt, max_train_samples, max_test_samples)
    converter_options = _converter_options(prompt, skip_bad_records)
    formats = ("dpo", "kto") if format == "both" else (format,)
    max_samples = {"train": max_train_samples, "test": max_test_samples}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    files = []
    with hh_rlhf_sources(input, data_dir) as sources:
        for split, (path, description) in sources.items():
            for converter_format in formats:
                output = output_dir / OUTPUT_FILE_PATTERNS[converter_format].format(split=split)
                if output.exists():
                    logger.warning("replacing the existing %s", output)
                converted = _convert(
                    path,
                    description,
                    output,
                    split,
                    converter_format,
                    max_samples[split],
                    converter_options,
                )
                logger.info("%s: %s (from %s)", output, converted.describe(), description)
                files.append(converted)
    return PrepareSummary(output_dir=output_dir, files=files)


def _check_arguments(format, prompt, max_train_samples, max_test_samples) -> None:
    if format not in FORMATS:
        raise ValueError(f"invalid format {format!r}; expected one of {', '.join(FORMATS)}")
    if prompt not in PROMPT_MODES:
        raise ValueError(
            f"invalid prompt mode {prompt!r}; expected one of {', '.join(PROMPT_MODES)}"
        )
    for name, value in (
        ("max_train_samples", max_train_samples),
        ("max_test_samples", max_test_samples),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def _converter_options(prompt: str, skip_bad_records: bool) -> dict[str, Any]:
    """Return the converter keywords that differ from its defaults.

    Older builds of ``pyalign._core`` lack the ``prompt`` and ``skip_bad_records`` arguments,
    so a keyword is passed only when the build has it, and a non-default value it cannot take
    raises.
    """
    parameters = inspect.signature(_core.convert_hh_rlhf).parameters
    options: dict[str, Any] = {}
    if "prompt" in parameters:
        options["prompt"] = prompt
    elif prompt != DEFAULT_PROMPT_MODE:
        raise NotImplementedError(
            f"prompt mode {prompt!r} needs a pyalign._core whose convert_hh_rlhf takes a "
            f"'prompt' argument; this build ({_core.__version__}) splits by the last-turn rule "
            "only, so use --prompt last-turn"
        )
    if "skip_bad_records" in parameters:
        options["skip_bad_records"] = skip_bad_records
    elif skip_bad_records:
        raise NotImplementedError(
            f"skip_bad_records needs a pyalign._core whose convert_hh_rlhf takes it; this build "
            f"({_core.__version__}) already counts every record it cannot split as skipped"
        )
    return options


def _convert(path, description, output, split, converter_format, max_samples, options):
    summary = _core.convert_hh_rlhf(
        str(path), str(output), format=converter_format, max_samples=max_samples, **options
    )
    converted = ConvertedFile(
        split=split,
        format=converter_format,
        source=description,
        output=output,
        read=summary["read"],
        kept=summary["kept"],
        written=summary["written"],
        skipped=summary["skipped"],
        skip_reasons=dict(summary["skip_reasons"]),
    )
    if converted.kept == 0:
        output.unlink(missing_ok=True)  # A header alone would fail later, far from the cause.
        reasons = ", ".join(f"{count} {reason}" for reason, count in converted.skip_reasons.items())
        raise DataError(
            f"{description}: no HH-RLHF record could be converted ({converted.read} read"
            f"{', skipped: ' + reasons if reasons else ''}); expected records whose 'chosen' and "
            "'rejected' conversations end in a human turn and an assistant turn"
        )
    return converted


@contextlib.contextmanager
def hh_rlhf_sources(
    input: str | Path | None, data_dir: str | None = None
) -> Iterator[dict[str, tuple[Path, str]]]:
    """Yield ``{split: (file, description)}`` for a local file or folder, or a hub dataset id.

    A hub dataset is written to temporary JSON Lines files, removed when the context exits.
    """
    if input is None:
        input = DEFAULT_HH_RLHF_DATASET
    path = Path(input).expanduser()
    if path.is_file():
        _check_record_file(path)
        if data_dir is not None:
            raise ValueError("data_dir applies to a hub dataset id only; the input is a local file")
        yield {"train": (path, str(input))}
        return
    if path.is_dir():
        if data_dir is not None:
            path = path / data_dir
        yield _folder_sources(path)
        return
    if _looks_like_path(str(input)):
        raise FileNotFoundError(f"HH-RLHF input not found: {input}")

    with tempfile.TemporaryDirectory(prefix="pyalign-hh-rlhf-") as folder:
        yield _download_splits(str(input), data_dir, Path(folder))


def _check_record_file(path: Path) -> None:
    if not path.name.lower().endswith(RECORD_FILE_SUFFIXES):
        raise ValueError(
            f"HH-RLHF input {path} has an unsupported extension; expected one of "
            f"{', '.join(RECORD_FILE_SUFFIXES)}"
        )


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~"))
        or text.lower().endswith(RECORD_FILE_SUFFIXES)
        or text.count("/") > 1
        or "\\" in text
    )


def _folder_sources(folder: Path) -> dict[str, tuple[Path, str]]:
    if not folder.is_dir():
        raise FileNotFoundError(f"HH-RLHF input folder not found: {folder}")
    sources = {}
    for split in SPLITS:
        for suffix in SPLIT_FILE_SUFFIXES:
            candidate = folder / f"{split}{suffix}"
            if candidate.is_file():
                sources[split] = (candidate, str(candidate))
                break
    if "train" not in sources:
        expected = " or ".join(f"train{suffix}" for suffix in SPLIT_FILE_SUFFIXES)
        raise FileNotFoundError(
            f"HH-RLHF input folder {folder} contains no {expected}; pass a folder with a train "
            "file (and optionally a test file of the same form), or a single file"
        )
    return sources


def _download_splits(dataset_id: str, data_dir: str | None, folder: Path):
    """Load a hub dataset with ``datasets`` and write its train and test splits as JSON Lines."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"reading the hub dataset {dataset_id!r} needs the 'datasets' package "
            "(pip install datasets), or pass a local file with --input"
        ) from None

    name = dataset_id if data_dir is None else f"{dataset_id} ({data_dir})"
    try:
        splits = datasets.load_dataset(dataset_id, data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 - datasets raises many unrelated types
        raise DataError(
            f"could not load the dataset {name} with the datasets library "
            f"({type(error).__name__}: {error}). Without network access, download the "
            "HH-RLHF files (such as harmless-base/train.jsonl.gz) and pass a local file or "
            "folder with --input"
        ) from None

    sources = {}
    for split in SPLITS:
        if split not in splits:
            continue
        table = splits[split]
        missing = [column for column in ("chosen", "rejected") if column not in table.column_names]
        if missing:
            raise MissingColumnError(
                f"dataset {name}, split '{split}': no column {', '.join(map(repr, missing))}; "
                f"columns found: {', '.join(table.column_names)}; expected HH-RLHF records "
                "with 'chosen' and 'rejected' conversations"
            )
        path = folder / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as file:
            for record in table.select_columns(["chosen", "rejected"]):
                file.write(json.dumps(record, ensure_ascii=False) + "\n")
        sources[split] = (path, f"{name} split '{split}'")
    if "train" not in sources:
        raise DataError(f"dataset {name} has no 'train' split (splits found: {', '.join(splits)})")
    return sources
