"""Table formats of ``pyalign._core``: Parquet written by pyarrow with each common codec,
all-column reads in file order, ``list_columns``, ``write_table``, and files that pyalign
writes read back by pyarrow."""

from __future__ import annotations

import gzip
import json

import pytest

from pyalign import _core

CODECS = ["snappy", "zstd", "gzip", "lz4", "none"]


@pytest.fixture
def pyarrow_parquet():
    return pytest.importorskip("pyarrow.parquet")


@pytest.mark.parametrize("codec", CODECS)
def test_parquet_from_pyarrow(tmp_path, pyarrow_parquet, codec):
    import pyarrow as pa

    table = pa.table(
        {
            "prompt": ["Hi", "Ünïcödé 🙂"],
            "score": pa.array([1, None], type=pa.int64()),
            "ratio": [0.5, 2.0],
            "flag": [True, False],
            "messages": [
                [{"role": "user", "content": "Hi"}],
                [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            ],
            "tags": [["x", "y"], []],
        }
    )
    path = tmp_path / "rows.parquet"
    pyarrow_parquet.write_table(table, path, compression=codec)

    assert _core.list_columns(str(path)) == table.column_names
    rows = _core.read_table(str(path))

    assert list(rows) == table.column_names
    assert rows["prompt"] == ["Hi", "Ünïcödé 🙂"]
    assert rows["score"] == ["1", ""]
    assert rows["ratio"] == ["0.5", "2.0"]
    assert rows["flag"] == ["true", "false"]
    assert [json.loads(text) for text in rows["messages"]] == table.column("messages").to_pylist()
    assert rows["tags"] == ['["x","y"]', "[]"]
    assert _core.read_table(str(path), ["tags", "prompt"]) == {
        "tags": rows["tags"],
        "prompt": rows["prompt"],
    }


def test_parquet_missing_column_is_key_error(tmp_path, pyarrow_parquet):
    import pyarrow as pa

    path = tmp_path / "rows.parquet"
    pyarrow_parquet.write_table(pa.table({"a": ["x"]}), path)

    with pytest.raises(KeyError) as caught:
        _core.read_table(str(path), ["b"])

    assert caught.value.args[0] == f'{path}: no column "b", the columns found are ["a"]'


def test_read_all_columns_in_file_order(tmp_path):
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("z,a,m\n1,2,3\n")
    jsonl_path = tmp_path / "rows.jsonl.gz"
    with gzip.open(jsonl_path, "wt", encoding="utf-8") as file:
        file.write('{"z": "1", "a": {"k": [1, 2]}, "m": null}\n{"z": "4", "a": 5, "m": "6"}\n')

    assert list(_core.read_table(str(csv_path))) == ["z", "a", "m"]
    assert _core.read_table(str(csv_path)) == {"z": ["1"], "a": ["2"], "m": ["3"]}
    assert _core.list_columns(str(jsonl_path)) == ["z", "a", "m"]
    assert _core.read_table(str(jsonl_path)) == {
        "z": ["1", "4"],
        "a": ['{"k":[1,2]}', "5"],
        "m": ["", "6"],
    }


def test_all_columns_need_first_record_keys(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": "1", "b": "2"}\n{"a": "3"}\n')

    with pytest.raises(KeyError, match=r'line 2: no column "b", the columns found are \["a"\]'):
        _core.read_table(str(path))


def test_duplicate_csv_header_is_value_error(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("a,a\n1,2\n")

    with pytest.raises(ValueError, match='line 1: invalid CSV: the header names column "a" twice'):
        _core.read_table(str(path))


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl", "deeper/out.parquet"])
def test_write_table_round_trip(tmp_path, name):
    columns = {"prompt": ['a, "b"', "line\nbreak"], "id": ["1", "2"]}
    path = tmp_path / name

    _core.write_table(str(path), columns)

    assert _core.read_table(str(path)) == columns


def test_write_table_errors(tmp_path):
    with pytest.raises(ValueError, match="expected one of .csv, .jsonl, .parquet"):
        _core.write_table(str(tmp_path / "out.txt"), {"a": ["1"]})
    with pytest.raises(ValueError, match=r"invalid column lengths \[1, 2\]"):
        _core.write_table(str(tmp_path / "out.csv"), {"a": ["1"], "b": ["1", "2"]})
    with pytest.raises(TypeError, match='column "a" must be a list of strings'):
        _core.write_table(str(tmp_path / "out.csv"), {"a": [1]})


def test_converted_parquet_reads_in_pyarrow(tmp_path, pyarrow_parquet):
    source = tmp_path / "hh.jsonl"
    source.write_text(
        json.dumps(
            {
                "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant: Ciao",
                "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant: No",
            }
        )
        + "\n"
    )
    output = tmp_path / "made" / "pairs.parquet"

    summary = _core.convert_hh_rlhf(str(source), str(output), prompt="full-context")

    table = pyarrow_parquet.read_table(output)
    assert table.column_names == ["prompt", "chosen", "rejected"]
    assert table.column("prompt").to_pylist() == [
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ]
    ]
    assert _core.read_table(str(output)) == summary["rows"]


def test_kto_parquet_label_is_boolean(tmp_path, pyarrow_parquet):
    source = tmp_path / "hh.jsonl"
    source.write_text(
        json.dumps(
            {"chosen": "\n\nHuman: Q\n\nAssistant: a", "rejected": "\n\nHuman: Q\n\nAssistant: b"}
        )
        + "\n"
    )
    output = tmp_path / "rows.parquet"

    _core.convert_hh_rlhf(str(source), str(output), format="kto")

    table = pyarrow_parquet.read_table(output)
    assert table.column("label").to_pylist() == [True, False]
    assert _core.read_table(str(output), ["label"]) == {"label": ["true", "false"]}
