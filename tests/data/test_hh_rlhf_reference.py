"""The HH-RLHF converter against a reference written with Python's ``re``, row for row and text
for text, over the whole shared harmless-base test split, in both prompt modes.

The reference states the rules of ``pyalign-data hh-rlhf`` independently of the Rust code:

1. A turn starts at ``Human:`` or ``Assistant:`` at the start of the text or after a blank line
   (``\\n\\n``); text before the first marker, when not blank, is a human turn.
2. Both conversations must end with an assistant turn.
3. The prompt is the longest run of identical leading turns, cut back to end with a human turn
   that an assistant turn follows in both conversations.
4. Each response is the rest of its conversation after that human turn, stripped.
5. ``last-turn`` keeps the stripped text of that human turn; ``full-context`` keeps every prompt
   turn as ``{"role", "content"}`` with stripped contents.
6. A record whose prompt turn or a response is empty is skipped.
"""

from __future__ import annotations

import gzip
import json
import re

import pytest

from pyalign import _core
from tests.conftest import require_shared

MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):")
ROLES = {"Human": "user", "Assistant": "assistant"}


def split_turns(conversation: str) -> list[tuple[str, str]]:
    """Split a conversation into (marker role, raw text) turns."""
    pieces = MARKER.split(conversation)
    lead, rest = pieces[0], pieces[1:]
    turns = [("Human", lead)] if lead.strip() else []
    turns += list(zip(rest[0::2], rest[1::2]))
    return turns


def reference_split(chosen: str, rejected: str, mode: str) -> tuple[str, ...] | str:
    """Return (prompt, chosen, rejected) or the skip reason of one record."""
    chosen_turns, rejected_turns = split_turns(chosen), split_turns(rejected)
    if not chosen_turns or chosen_turns[-1][0] != "Assistant":
        return "no_chosen_assistant_turn"
    if not rejected_turns or rejected_turns[-1][0] != "Assistant":
        return "no_rejected_assistant_turn"

    shared = 0
    while (
        shared < min(len(chosen_turns), len(rejected_turns))
        and chosen_turns[shared] == rejected_turns[shared]
    ):
        shared += 1
    for length in range(shared, 0, -1):
        ends_with_human = chosen_turns[length - 1][0] == "Human"
        answered = all(
            length < len(turns) and turns[length][0] == "Assistant"
            for turns in (chosen_turns, rejected_turns)
        )
        if ends_with_human and answered:
            break
    else:
        return "no_shared_prompt"

    def rest(turns: list[tuple[str, str]]) -> str:
        later = "".join(f"\n\n{role}:{text}" for role, text in turns[length + 1 :])
        return (turns[length][1] + later).strip()

    last_human = chosen_turns[length - 1][1].strip()
    chosen_response, rejected_response = rest(chosen_turns), rest(rejected_turns)
    if not last_human:
        return "empty_prompt"
    if not chosen_response:
        return "empty_chosen_response"
    if not rejected_response:
        return "empty_rejected_response"
    if mode == "last-turn":
        prompt = last_human
    else:
        prompt = [
            {"role": ROLES[role], "content": text.strip()} for role, text in chosen_turns[:length]
        ]
    return prompt, chosen_response, rejected_response


@pytest.fixture(scope="module")
def records():
    path = require_shared("data/hh-rlhf/harmless-base-test.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return path, [json.loads(line) for line in file]


@pytest.mark.parametrize("mode", ["last-turn", "full-context"])
def test_matches_regex_reference(records, mode):
    path, lines = records
    expected_rows, expected_skips = [], {}
    for line in lines:
        outcome = reference_split(line["chosen"], line["rejected"], mode)
        if isinstance(outcome, str):
            expected_skips[outcome] = expected_skips.get(outcome, 0) + 1
        else:
            expected_rows.append(outcome)

    summary = _core.convert_hh_rlhf(str(path), prompt=mode, skip_bad_records=True)

    rows = summary["rows"]
    assert summary["read"] == len(lines) == 2312
    assert summary["skip_reasons"] == expected_skips
    assert summary["kept"] == len(expected_rows)
    for index, (prompt, chosen, rejected) in enumerate(expected_rows):
        converted = rows["prompt"][index]
        if mode == "full-context":
            converted = json.loads(converted)
        assert converted == prompt, index
        assert rows["chosen"][index] == chosen, index
        assert rows["rejected"][index] == rejected, index


def test_no_response_character_is_lost(records):
    path, lines = records

    summary = _core.convert_hh_rlhf(str(path), skip_bad_records=True)

    rows = summary["rows"]
    kept_lines = [
        line
        for line in lines
        if not isinstance(reference_split(line["chosen"], line["rejected"], "last-turn"), str)
    ]
    assert len(kept_lines) == len(rows["chosen"])
    for line, chosen, rejected in zip(kept_lines, rows["chosen"], rows["rejected"]):
        assert line["chosen"].rstrip().endswith(chosen)
        assert line["rejected"].rstrip().endswith(rejected)
    # Some records part before their final turn, so a response carries a later turn.
    assert any("\n\nAssistant:" in text for text in rows["chosen"] + rows["rejected"])


EDGE_CASES = [
    # "Human:" inside a turn is text, and a marker opening the text counts.
    ("Human: say Human: hi\n\nAssistant: a", "Human: say Human: hi\n\nAssistant: b"),
    # Three newlines before a marker: the first stays with the earlier turn.
    ("\n\nHuman: q\n\n\nAssistant: a", "\n\nHuman: q\n\n\nAssistant: b"),
    # The conversations part at a human turn, so the prompt is cut back.
    (
        "\n\nHuman: A\n\nAssistant: B\n\nHuman: C\n\nAssistant: D",
        "\n\nHuman: A\n\nAssistant: B\n\nHuman: X\n\nAssistant: Y",
    ),
]


@pytest.mark.parametrize("mode", ["last-turn", "full-context"])
@pytest.mark.parametrize(("chosen", "rejected"), EDGE_CASES)
def test_edge_cases_match_reference(tmp_path, chosen, rejected, mode):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"chosen": chosen, "rejected": rejected}) + "\n", encoding="utf-8")

    rows = _core.convert_hh_rlhf(str(path), prompt=mode)["rows"]

    prompt = rows["prompt"][0]
    if mode == "full-context":
        prompt = json.loads(prompt)
    assert (prompt, rows["chosen"][0], rows["rejected"][0]) == reference_split(
        chosen, rejected, mode
    )
