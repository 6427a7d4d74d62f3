"""Benchmark the data pipeline: pyalign's Rust pipeline against TRL's DPO preprocessing and
against raw ``tokenizers`` encoding, on the same HH-RLHF pairs with the same tokenizer.

The input is the shared HH-RLHF harmless-base test split (2,312 records) repeated ``--repeat``
times (4 gives 9,248 records), with the shared Llama 2 tokenizer and ``max_length`` 512. Three
pipelines run in one process, interleaved over ``--rounds`` rounds, and each reports its best
round:

(a) pyalign: read the gzipped JSON Lines, convert HH-RLHF (last-turn), tokenize and truncate
    every pair (``PairDataset``), order length-grouped batches and collate every batch into
    numpy arrays (then ``torch.from_numpy``).
(b) TRL: ``DPOTrainer._prepare_dataset`` (EOS added, prompt, prompt+chosen and prompt+rejected
    tokenized by ``datasets.map``) on a ``datasets.Dataset`` of the pairs that (a) converted,
    then ``DataCollatorForPreference`` over every batch. Reading and converting are not timed
    for TRL, which favours it.
(c) raw: ``tokenizers.Tokenizer.encode_batch_fast`` on the prompt, chosen and rejected texts
    of the same pairs, the call alone: no truncation, no batching, no id extraction.

Prints one JSON line with pairs per second for each and the ratios. Run from the repository
root:

    python bench/data_pipeline.py
    python bench/data_pipeline.py --repeat 8 --rounds 5

Needs the shared folder (``../shared`` beside the repository, or ``$PYALIGN_SHARED``), and for
(b) and (c) ``trl``, ``datasets`` and ``tokenizers`` (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYALIGN_SHARED", REPO_ROOT.parent / "shared"))
HH_RLHF = SHARED / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
LLAMA2 = SHARED / "tokenizers" / "llama2"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=4, help="copies of the 2,312 records")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per pipeline")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per batch")
    return parser.parse_args()


def write_repeated_input(folder: Path, repeat: int) -> Path:
    """Concatenate the gzipped split `repeat` times; gzip readers take several members."""
    data = HH_RLHF.read_bytes()
    path = folder / "hh-rlhf-repeated.jsonl.gz"
    path.write_bytes(data * repeat)
    return path


def run_pyalign(path: Path, tokenizer, max_length: int, batch_size: int) -> int:
    """Read, convert, tokenize and batch; return the number of input pairs."""
    import torch

    from pyalign import _core

    summary = _core.convert_hh_rlhf(str(path))
    rows = summary["rows"]
    dataset = _core.PairDataset(
        tokenizer, rows["prompt"], rows["chosen"], rows["rejected"], max_length=max_length
    )
    for indices in dataset.batch_order(batch_size, seed=0):
        batch = dataset.collate(indices)
        tensors = {name: torch.from_numpy(array) for name, array in batch.items()}
        assert tensors["input_ids"].shape[1] <= max_length
    return summary["read"]


def run_trl(pairs: dict[str, list[str]], tokenizer, max_length: int, batch_size: int) -> int:
    """TRL's DPO preprocessing and collator on the converted pairs."""
    from datasets import Dataset
    from trl import DPOConfig
    from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer

    with tempfile.TemporaryDirectory() as output_dir:
        args = DPOConfig(
            output_dir=output_dir, max_length=max_length, report_to=[], use_cpu=True, bf16=False
        )
        # _prepare_dataset reads only the tokenizer from the trainer.
        trainer = SimpleNamespace(_tokenizer=tokenizer)
        dataset = Dataset.from_dict(pairs)
        dataset = DPOTrainer._prepare_dataset(trainer, dataset, tokenizer, args, "train")
    collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=max_length)
    columns = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    for start in range(0, len(columns), batch_size):
        examples = columns[start : start + batch_size]
        batch = collator([dict(zip(examples, values)) for values in zip(*examples.values())])
        assert batch["input_ids"].shape[1] <= max_length
    return len(pairs["prompt"])


def run_encode_batch_fast(pairs: dict[str, list[str]], tokenizer) -> int:
    texts = pairs["prompt"] + pairs["chosen"] + pairs["rejected"]
    encodings = tokenizer.encode_batch_fast(texts)
    assert len(encodings) == len(texts)
    return len(pairs["prompt"])


def best_rate(timings: list[float], count: int) -> float:
    return count / min(timings)


def main() -> int:
    args = parse_args()
    missing = [path for path in (HH_RLHF, LLAMA2) if not path.exists()]
    if missing:
        print(f"skipped: {missing[0]} not found (set PYALIGN_SHARED)", file=sys.stderr)
        return 0

    logging.basicConfig(level=logging.WARNING)
    # TRL warns once per process that prompt and completion tokens merge at their boundary,
    # which is expected for plain-text pairs joined without a space.
    logging.getLogger("trl").setLevel(logging.ERROR)
    import datasets
    import tokenizers
    import transformers

    from pyalign import _core

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()

    pyalign_tokenizer = _core.Tokenizer(str(LLAMA2))
    fast_tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(LLAMA2 / "tokenizer.json"), bos_token="<s>", eos_token="</s>"
    )
    fast_tokenizer.pad_token = fast_tokenizer.eos_token
    raw_tokenizer = tokenizers.Tokenizer.from_file(str(LLAMA2 / "tokenizer.json"))

    timings: dict[str, list[float]] = {"pyalign": [], "trl": [], "encode_batch_fast": []}
    with tempfile.TemporaryDirectory() as folder:
        path = write_repeated_input(Path(folder), args.repeat)
        summary = _core.convert_hh_rlhf(str(path))
        pairs = summary["rows"]
        num_pairs = summary["read"]
        runs = {
            "pyalign": lambda: run_pyalign(
                path, pyalign_tokenizer, args.max_length, args.batch_size
            ),
            "trl": lambda: run_trl(pairs, fast_tokenizer, args.max_length, args.batch_size),
            "encode_batch_fast": lambda: run_encode_batch_fast(pairs, raw_tokenizer),
        }
        for _ in range(args.rounds):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                timings[name].append(time.perf_counter() - started)

    rates = {name: best_rate(values, num_pairs) for name, values in timings.items()}
    result = {
        "pairs": num_pairs,
        "kept_pairs": summary["kept"],
        "max_length": args.max_length,
        "rounds": args.rounds,
        "cores": os.cpu_count(),
        "pyalign_pairs_per_second": round(rates["pyalign"]),
        "trl_pairs_per_second": round(rates["trl"]),
        "encode_batch_fast_pairs_per_second": round(rates["encode_batch_fast"]),
        "pyalign_vs_trl": round(rates["pyalign"] / rates["trl"], 2),
        "pyalign_vs_encode_batch_fast": round(rates["pyalign"] / rates["encode_batch_fast"], 2),
        "versions": {
            "pyalign": _core.__version__,
            "trl": __import__("trl").__version__,
            "tokenizers": tokenizers.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
