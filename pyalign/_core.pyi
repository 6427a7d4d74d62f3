"""Type stubs for ``pyalign._core``, the Rust extension that reads, tokenizes and batches data.

Every call below converts its arguments, releases the interpreter lock for the work and returns
token data as numpy arrays. Tokenizing runs on rayon's thread pool, sized by
``RAYON_NUM_THREADS`` or the number of cores. Rust log records arrive in Python's ``logging``
under the ``pyalign`` logger names (``pyalign.batch``, ``pyalign.hh_rlhf``, ...).

NOTE: the classes do not support pickling, so a torch DataLoader over one of the datasets needs
``num_workers=0`` or the ``fork`` start method.

``Indices``, ``Batch``, ``ChatTemplate`` and ``HhRlhfSummary`` exist only in this stub, for type
checkers; at run time the functions return plain dicts.
"""

from typing import Any, Iterable, Mapping, Sequence, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str

Indices = Union[Sequence[int], npt.NDArray[np.integer]]

ChatTemplate = Union[bool, str, None]
"""The ``chat_template`` argument of the dataset classes. None or False: prompts are plain text
and are tokenized as they are. True: the tokenizer's own template, from ``chat_template.jinja``
or the ``chat_template`` field of ``tokenizer_config.json`` beside ``tokenizer.json`` (a list of
named templates gives the one named ``"default"``). A string: the Jinja template text itself.

With a template, each prompt is rendered with ``add_generation_prompt=True`` and the variables
``messages``, ``bos_token`` and ``eos_token``, as transformers' ``apply_chat_template`` renders
it (``trim_blocks``, ``lstrip_blocks``, Python string methods, ``raise_exception``,
``strftime_now``). A prompt is a conversation when its text is a JSON array of objects with a
``"role"``, which is how JSON Lines and Parquet lists of messages read. Other text becomes one
user message. The rendered text is tokenized by the usual prompt rule, so it starts with one
BOS: a BOS that the template writes is not doubled, and a template that writes none gains one,
unlike ``apply_chat_template(tokenize=True)``. Responses are text, or one assistant message, and
end with EOS as without a template; the template's own end-of-turn text is not added.
"""

class Batch(TypedDict):
    """Padded sequences of one batch, each array of shape (B, T). The arrays own the buffers
    that Rust filled; ``torch.from_numpy`` wraps them without a copy."""

    input_ids: npt.NDArray[np.int64]
    """Token ids, padded with ``pad_token_id`` on the right (training) or left (generation)."""
    attention_mask: npt.NDArray[np.int64]
    """1 on real tokens, 0 on padding."""
    label_mask: npt.NDArray[np.bool_]
    """True exactly on response tokens, EOS included; False on prompt and padding."""
    position_ids: npt.NDArray[np.int64]
    """Position of each real token in its sequence, from 0 on either padding side; 0 on
    padding."""

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
    @property
    def chat_template(self) -> str | None:
        """The tokenizer's own chat template text (see ``ChatTemplate``), or None."""
    def apply_chat_template(
        self,
        conversation: str | Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
    ) -> str:
        """Render a conversation (message dicts, their JSON text, or plain text as one user
        message) with ``chat_template`` or the tokenizer's own template.

        Raises:
            ValueError: no template, a template that does not compile, or one that fails or
                calls ``raise_exception`` on this conversation; the message names the cause.
        """

def read_table(path: str, columns: list[str] | None = None) -> dict[str, list[str]]:
    """Read the requested columns of a file, or all of them in file order, as lists of strings.

    The format follows the extension: ``.csv`` (header row, RFC 4180 quoting, optional UTF-8
    byte order mark), ``.jsonl`` (one JSON object per line, blank lines ignored), ``.json`` (an
    array of objects, or JSON Lines), any of these with ``.gz``, and ``.parquet`` (snappy, zstd,
    gzip, lz4 or no compression). JSON strings are taken as they are, null becomes ``""`` and
    other values their JSON text (``true``, ``1``, ``[{"role":"user","content":"Hi"}]``); Parquet
    values follow the same rule, so a list of structs reads like the JSON list. With ``columns``
    None, a JSON file's columns are the keys of its first record.

    Raises:
        KeyError: a column is absent; the message names the column, the file and the columns
            found.
        FileNotFoundError: the file does not exist.
        ValueError: the file has no records, is not valid UTF-8, CSV, JSON or Parquet (the
            message names the file and line), has a JSON line that is not an object, or has an
            unsupported extension.
    """

def list_columns(path: str) -> list[str]:
    """Return the column names of a file in file order, reading only the CSV header, the
    Parquet footer or the first JSON record. Raises as ``read_table``."""

def write_table(path: str, columns: Mapping[str, Sequence[str]]) -> None:
    """Write string columns of equal length to ``.csv``, ``.jsonl`` or ``.parquet`` (snappy),
    creating missing parent folders. ``read_table`` reads them back unchanged.

    Raises:
        ValueError: an unsupported extension or columns of different lengths.
        TypeError: a column that is not a list of strings.
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

    No cut splits a character. Where a cut would fall between the byte tokens of one character
    (byte-fallback ``<0xNN>`` tokens, or byte-level BPE tokens), it moves to the character's
    edge and keeps fewer tokens. Decoding a truncated sequence therefore never yields U+FFFD.

    A pair is dropped, and counted in ``drop_reasons``, when a response has no token apart
    from EOS (``"empty_chosen_response"``, ``"empty_rejected_response"``), when chosen and
    rejected have the same ids (``"identical_responses"``) or do so after truncation
    (``"identical_after_truncation"``), or when the room after the prompt is shorter than the
    first character of a response (``"empty_after_truncation"``).

    ``chat_template`` renders each prompt first; see ``ChatTemplate``. Without a template, a
    prompt that is a JSON list of messages raises ValueError.

    Raises:
        ValueError: ``max_length`` below 2, ``max_prompt_length`` below 1, an unknown
            ``truncation_mode``, lists of different lengths, or a chat template problem; the
            message names the record.
        TypeError: a ``chat_template`` that is neither None, a bool nor a string.
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
        chat_template: ChatTemplate = None,
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
    def collate(
        self, indices: Indices, pad_to_multiple_of: int = 1, padding_side: str = "right"
    ) -> Batch:
        """Pad the kept pairs at ``indices`` into a batch of shape (2P, T).

        Rows 0..P-1 contain the chosen sequences and rows P..2P-1 the rejected ones, in the order
        of ``indices``. T is the longest sequence rounded up to ``pad_to_multiple_of``.
        ``padding_side`` is ``"right"`` or ``"left"``. An index outside ``0..len`` raises
        ValueError.
        """
    def collate_prompts(self, indices: Indices, pad_to_multiple_of: int = 1) -> Batch:
        """Pad the prompts alone of the pairs at ``indices``, left-padded for generation.
        Shape (P, T); ``label_mask`` is all False."""
    def batch_order(
        self,
        batch_size: int,
        seed: int = 0,
        group_by_length: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> list[npt.NDArray[np.int64]]:
        """Return batches of kept-pair indices for ``collate``.

        Every index is in exactly one batch (a last partial batch is left out under
        ``drop_last``). ``shuffle`` draws a seeded order that is the same on every machine.
        ``group_by_length`` sorts mega-batches of 50 batches by length, longest first, cuts them
        into batches and shuffles the batches, as transformers' length-grouped sampler does.
        The batch with the longest pair goes first, so that an out-of-memory error shows at the
        first step. The padding share of the order is logged at INFO.
        """
    def padding_fraction(self, batches: Iterable[Indices], pad_to_multiple_of: int = 1) -> float:
        """Return the share of padding slots among all slots that ``collate`` gives for
        ``batches``, each row padded to its batch's longest row."""

class ResponseDataset:
    """(prompt, response) rows tokenized once, for KTO, by the rules of PairDataset.

    A row is dropped as ``"empty_response"`` when its response has no token apart from EOS, and
    as ``"empty_after_truncation"`` when the room after its prompt is shorter than the first
    character of its response.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompts: list[str],
        responses: list[str],
        max_length: int,
        max_prompt_length: int | None = None,
        truncation_mode: str = "keep_end",
        chat_template: ChatTemplate = None,
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
    def collate(
        self, indices: Indices, pad_to_multiple_of: int = 1, padding_side: str = "right"
    ) -> Batch:
        """Pad the kept rows at ``indices`` into a batch of shape (B, T)."""
    def collate_pairs(
        self,
        prompt_indices: Indices,
        response_indices: Indices,
        pad_to_multiple_of: int = 1,
        padding_side: str = "right",
    ) -> Batch:
        """Pad sequences that join the prompt of row ``prompt_indices[k]`` with the response of
        row ``response_indices[k]``, truncated to ``max_length`` by the same rule. KTO uses such
        mismatched pairs for its KL estimate. Shape (B, T) with B = ``len(prompt_indices)``.
        A row whose prompt leaves less room than the first character of the response has no
        label."""
    def collate_prompts(self, indices: Indices, pad_to_multiple_of: int = 1) -> Batch:
        """Pad the prompts alone of the rows at ``indices``, left-padded for generation."""
    def batch_order(
        self,
        batch_size: int,
        seed: int = 0,
        group_by_length: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> list[npt.NDArray[np.int64]]:
        """Return batches of kept-row indices, as ``PairDataset.batch_order`` does."""
    def padding_fraction(self, batches: Iterable[Indices], pad_to_multiple_of: int = 1) -> float:
        """Return the share of padding slots that ``collate`` gives for ``batches``."""

class PromptDataset:
    """Prompts alone, tokenized once by the prompt rules of PairDataset, for the generation
    step of GRPO: batches are left-padded so that every row ends at the last column.

    ``max_prompt_length`` cuts each prompt by ``truncation_mode``. A prompt without tokens (an
    empty text and no BOS) is dropped as ``"empty_prompt"``. ``kept_indices`` maps the kept
    prompts back to the input rows, so the other columns of the data set (as ``read_table``
    returns them) can follow each prompt to the reward functions.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompts: list[str],
        max_prompt_length: int | None = None,
        truncation_mode: str = "keep_end",
        chat_template: ChatTemplate = None,
    ) -> None: ...
    def __len__(self) -> int:
        """Return the number of kept prompts."""
    @property
    def num_dropped(self) -> int: ...
    @property
    def drop_reasons(self) -> dict[str, int]: ...
    @property
    def kept_indices(self) -> npt.NDArray[np.int64]: ...
    def lengths(self) -> npt.NDArray[np.int64]:
        """Return the length of each kept prompt. Shape (len,)."""
    def collate(
        self, indices: Indices, pad_to_multiple_of: int = 1, padding_side: str = "left"
    ) -> Batch:
        """Pad the prompts at ``indices`` into a batch of shape (B, T); ``label_mask`` is all
        False."""
    def batch_order(
        self,
        batch_size: int,
        seed: int = 0,
        group_by_length: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> list[npt.NDArray[np.int64]]:
        """Return batches of kept-prompt indices, as ``PairDataset.batch_order`` does."""
    def padding_fraction(self, batches: Iterable[Indices], pad_to_multiple_of: int = 1) -> float:
        """Return the share of padding slots that ``collate`` gives for ``batches``."""

class HhRlhfSummary(TypedDict):
    read: int
    """Input records read."""
    kept: int
    """Input records converted."""
    written: int
    """Output rows: one per kept record for ``"dpo"``, two for ``"kto"``."""
    skipped: int
    skip_reasons: dict[str, int]
    """Skipped records per reason: ``empty_prompt``, ``empty_chosen_response`` and
    ``empty_rejected_response`` always; under ``skip_bad_records`` also
    ``no_chosen_assistant_turn``, ``no_rejected_assistant_turn``, ``no_shared_prompt``,
    ``invalid_json``, ``invalid_utf8``, ``invalid_csv`` and ``missing_column``."""
    rows: dict[str, list[str]]
    """The output columns. ``"dpo"`` gives ``prompt``, ``chosen`` and ``rejected``. ``"kto"``
    gives ``prompt``, ``response`` and ``label``, whose values are ``"true"`` or ``"false"``.
    A ``full-context`` prompt is the compact JSON text of its messages, as ``read_table`` reads
    it back from any output format."""

def convert_hh_rlhf(
    input: str,
    output: str | None = None,
    format: str = "dpo",
    max_samples: int | None = None,
    prompt: str = "last-turn",
    skip_bad_records: bool = False,
) -> HhRlhfSummary:
    """Convert Anthropic HH-RLHF records, as ``pyalign-data hh-rlhf`` does.

    A turn starts at ``Human:`` or ``Assistant:`` at the start of the text or after a blank
    line, so ``Human:`` inside a turn is text. The prompt is the run of leading turns that
    ``chosen`` and ``rejected`` share, cut back to end with a human turn that both answer. Each
    response is the rest of its conversation after that turn, stripped. That is usually the
    final assistant turn; when the two conversations part earlier, the responses keep the later
    turns with their markers, so no character is lost.

    ``prompt="last-turn"`` keeps the text of the last shared human turn. ``"full-context"``
    keeps every shared turn as ``{"role": "user" | "assistant", "content"}`` messages for a
    chat template: a JSON string in CSV, a JSON array in JSON Lines, a list of structs in
    Parquet. A record with an empty prompt turn or response is skipped and counted.

    ``output`` (``.csv``, ``.jsonl`` or ``.parquet``; missing folders are created) is written
    when given. ``max_samples`` stops after that many kept records.

    A malformed record (invalid JSON or UTF-8, a missing column, no final assistant turn, no
    shared human turn) raises, naming the file and line, unless ``skip_bad_records`` counts it
    in ``skip_reasons`` and logs the first three of each reason at WARNING.

    Raises:
        ValueError: an unknown ``format`` or ``prompt``, an unsupported output extension, an
            unreadable input file, or a malformed record.
        KeyError: a record lacks ``chosen`` or ``rejected``.
        FileNotFoundError: the input does not exist.
    """
