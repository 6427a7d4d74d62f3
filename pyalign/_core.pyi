"""Type stubs for ``pyalign._core``, the Rust extension that reads, tokenizes and batches data.

Every call below converts its arguments, releases the interpreter lock for the work and returns
token data as numpy arrays. Tokenizing runs on rayon's thread pool, sized by
``RAYON_NUM_THREADS`` or the number of cores. Rust log records arrive in Python's ``logging``
under the ``pyalign`` logger names (``pyalign.batch``, ``pyalign.hh_rlhf``, ...).

NOTE: the classes do not support pickling, so a torch DataLoader over one of the datasets needs
``num_workers=0`` or the ``fork`` start method.

``Indices``, ``Batch`` and ``HhRlhfSummary`` exist only in this stub, for type checkers; at run
time the functions return plain dicts.
"""

from typing import Sequence, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str

Indices = Union[Sequence[int], npt.NDArray[np.integer]]

class Batch(TypedDict):
    """Padded sequences of one batch, each array of shape (B, T)."""

    input_ids: npt.NDArray[np.int64]
    """Token ids, right-padded with ``pad_token_id``."""
    attention_mask: npt.NDArray[np.int64]
    """1 on real tokens, 0 on padding."""
    label_mask: npt.NDArray[np.bool_]
    """True exactly on response tokens, EOS included; False on prompt and padding."""

class Tokenizer:
    """A Hugging Face ``tokenizer.json`` with its BOS, EOS and padding tokens.

    Args:
        path: a ``tokenizer.json`` file or a folder containing one.
        bos_token, eos_token, pad_token: the token's text, or None for no such token. When an
            argument is omitted, the token comes from the field of the same name in
            ``tokenizer_config.json`` beside ``tokenizer.json``. That field is a string, null,
            or an object with ``"content"``. A missing file or field means no such token.

    Raises:
        FileNotFoundError: ``tokenizer.json`` does not exist.
        ValueError: the file is not a valid tokenizer.
        KeyError: a special token is not in the vocabulary.
        TypeError: a special token argument or config field is neither a string nor None.

    Example::

        tokenizer = Tokenizer("models/stories260K")
        tokenizer.encode("Once upon a time")  # [1, ...]: this tokenizer adds BOS itself
    """

    def __init__(
        self,
        path: str,
        bos_token: str | None = ...,
        eos_token: str | None = ...,
        pad_token: str | None = ...,
    ) -> None: ...
    @property
    def bos_token_id(self) -> int | None: ...
    @property
    def eos_token_id(self) -> int | None: ...
    @property
    def pad_token_id(self) -> int:
        """The padding id: the pad token's id, else the EOS id, else 0."""
    @property
    def vocab_size(self) -> int:
        """The vocabulary size, added tokens included."""
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Encode ``text`` as the tokenizer does. With ``add_special_tokens`` the
        post-processor runs and may add BOS."""
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Decode ``ids``. An id outside the vocabulary raises ValueError."""

def read_table(path: str, columns: list[str]) -> dict[str, list[str]]:
    """Read the requested columns of a file as lists of strings.

    The format follows the extension: ``.csv`` (header row, RFC 4180 quoting, optional UTF-8
    byte order mark), ``.jsonl`` (one JSON object per line, blank lines ignored), ``.json`` (an
    array of objects, or JSON Lines) and any of these with ``.gz``. JSON strings are taken as
    they are, null becomes ``""`` and other values their JSON text (``true``, ``1``).

    Raises:
        KeyError: a column is absent; the message names the column, the file and the columns
            found.
        FileNotFoundError: the file does not exist.
        ValueError: the file has no records, is not valid UTF-8, CSV or JSON (the message
            names the file and line), has a JSON line that is not an object, or has an
            unsupported extension.
    """

class PairDataset:
    """Preference pairs tokenized once, for DPO, ORPO and similar losses.

    Prompt and responses are tokenized separately and joined, so a pair's prompt tokens are
    identical in its chosen and rejected sequences. The prompt is encoded with the
    post-processor and starts with exactly one BOS when the tokenizer defines one. An EOS
    that the post-processor appended is removed. Each response is encoded without the
    post-processor and ends with one EOS (when defined), never two.

    Truncation: the prompt is cut to ``max_prompt_length`` (``truncation_mode`` ``"keep_end"``
    keeps its end, ``"keep_start"`` its start; BOS stays first). A response longer than the
    room left by ``max_length`` is cut, keeping its start. A prompt of ``max_length`` tokens
    or more is cut further to ``max_length - 1``, leaving one response token.

    A pair is dropped, and counted in ``drop_reasons``, when a response has no token apart
    from EOS (``"empty_chosen_response"``, ``"empty_rejected_response"``) or when chosen and
    rejected have the same ids (``"identical_responses"``) or do so after truncation
    (``"identical_after_truncation"``).

    Raises:
        ValueError: ``max_length`` below 2, ``max_prompt_length`` below 1, an unknown
            ``truncation_mode``, or lists of different lengths.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompts: list[str],
        chosen: list[str],
        rejected: list[str],
        max_length: int,
        max_prompt_length: int | None = None,
        truncation_mode: str = "keep_end",
    ) -> None: ...
    def __len__(self) -> int:
        """Return the number of kept pairs."""
    @property
    def num_dropped(self) -> int: ...
    @property
    def drop_reasons(self) -> dict[str, int]:
        """The number of dropped pairs per reason."""
    @property
    def kept_indices(self) -> npt.NDArray[np.int64]:
        """The input index of each kept pair. Shape (len,)."""
    def lengths(self) -> npt.NDArray[np.int64]:
        """Return the length of each kept pair's longer sequence. Shape (len,)."""
    def collate(self, indices: Indices, pad_to_multiple_of: int = 1) -> Batch:
        """Pad the kept pairs at ``indices`` into a batch of shape (2P, T).

        Rows 0..P-1 contain the chosen sequences and rows P..2P-1 the rejected ones, in the order
        of ``indices``. T is the longest sequence rounded up to ``pad_to_multiple_of``. An index
        outside ``0..len`` raises ValueError.
        """

class ResponseDataset:
    """(prompt, response) rows tokenized once, for KTO, by the rules of PairDataset.

    A row is dropped as ``"empty_response"`` when its response has no token apart from EOS.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompts: list[str],
        responses: list[str],
        max_length: int,
        max_prompt_length: int | None = None,
        truncation_mode: str = "keep_end",
    ) -> None: ...
    def __len__(self) -> int:
        """Return the number of kept rows."""
    @property
    def num_dropped(self) -> int: ...
    @property
    def drop_reasons(self) -> dict[str, int]: ...
    @property
    def kept_indices(self) -> npt.NDArray[np.int64]: ...
    def lengths(self) -> npt.NDArray[np.int64]:
        """Return the length of each kept row's sequence after truncation. Shape (len,)."""
    def collate(self, indices: Indices, pad_to_multiple_of: int = 1) -> Batch:
        """Pad the kept rows at ``indices`` into a batch of shape (B, T)."""
    def collate_pairs(
        self, prompt_indices: Indices, response_indices: Indices, pad_to_multiple_of: int = 1
    ) -> Batch:
        """Pad sequences that join the prompt of row ``prompt_indices[k]`` with the response of
        row ``response_indices[k]``, truncated to ``max_length`` by the same rule. KTO uses such
        mismatched pairs for its KL estimate. Shape (B, T) with B = ``len(prompt_indices)``."""

class HhRlhfSummary(TypedDict):
    read: int
    """Input records read."""
    kept: int
    """Input records converted."""
    written: int
    """Output rows: one per kept record for ``"dpo"``, two for ``"kto"``."""
    skipped: int
    skip_reasons: dict[str, int]
    """Skipped records per reason: ``no_chosen_assistant_turn``, ``no_rejected_assistant_turn``,
    ``empty_prompt``, ``empty_chosen_response``, ``empty_rejected_response``."""
    rows: dict[str, list[str]]
    """The output columns. ``"dpo"`` gives ``prompt``, ``chosen`` and ``rejected``. ``"kto"``
    gives ``prompt``, ``response`` and ``label``, whose values are ``"true"`` or ``"false"``."""

def convert_hh_rlhf(
    input: str,
    output: str | None = None,
    format: str = "dpo",
    max_samples: int | None = None,
) -> HhRlhfSummary:
    """Convert Anthropic HH-RLHF records, as ``pyalign-data hh-rlhf`` does.

    The prompt is the last human turn of ``chosen``, and each response the last assistant turn
    of its conversation, all stripped. A record is kept when all three are non-empty.
    ``output`` (``.csv`` or ``.jsonl``) is written when given. ``max_samples`` stops after that
    many kept records.

    Raises:
        ValueError: an unknown ``format`` or output extension, or an unreadable input file.
        KeyError: a record lacks ``chosen`` or ``rejected``.
        FileNotFoundError: the input does not exist.
    """
