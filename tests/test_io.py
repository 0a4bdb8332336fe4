"""sentembed.io: atomic writes (whole or not at all) and the streaming record readers
(errors name file and line), checked against the standard library's own csv and json."""
from __future__ import annotations

import csv
import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentembed.io import (DataFormatError, JsonLineError, atomic_dir, atomic_write, move_into_place, read_csv,
                          read_jsonl, read_lines, read_records, read_texts, write_embeddings)


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- atomic writes ---------------------------------------------------------------------

def test_atomic_write_is_whole_after_success(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with atomic_write(target, "w") as f:
        f.write("new ✓")
        assert target.read_text() == "old"  # nothing visible until the block ends
    assert target.read_text(encoding="utf-8") == "new ✓" and hidden(tmp_path) == []
    with atomic_write(target) as f:
        f.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"


def test_failure_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "vectors.bin"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target) as f:
            f.write(b"half of the new")
            f.flush()
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old content" and hidden(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "fresh.txt", "w") as f:
            f.write("x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.bin"]


def test_writers_that_take_a_file_name_write_to_handle_name(tmp_path):
    target = tmp_path / "m.parquet"
    with atomic_write(target) as f:
        assert os.path.dirname(f.name) == str(tmp_path)  # beside the target: the rename stays on one disk
        pq.write_table(pa.table({"n": [1, 2, 3]}), f.name)
    assert pq.read_table(target).column("n").to_pylist() == [1, 2, 3] and hidden(tmp_path) == []


def test_atomic_write_makes_files_like_open_does(tmp_path):
    with atomic_write(tmp_path / "a") as f:
        f.write(b"a")
    (tmp_path / "b").write_bytes(b"b")
    assert (tmp_path / "a").stat().st_mode == (tmp_path / "b").stat().st_mode
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "c", "a"):
            pass


def test_atomic_dir_swaps_in_a_whole_tree_or_nothing(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as staging:
        (staging / "config.json").write_text("1")
        (staging / "sub").mkdir()
        (staging / "sub" / "w.bin").write_bytes(b"w")
    with atomic_dir(target) as staging:
        (staging / "config.json").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]  # the old tree is gone whole
    assert (target / "config.json").read_text() == "2" and hidden(tmp_path) == []
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as staging:
            (staging / "config.json").write_text("3")
            raise RuntimeError("crash while saving")
    assert (target / "config.json").read_text() == "2" and hidden(tmp_path) == []


def test_move_into_place_replaces_files_and_directories(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "x").write_text("new")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "y").write_text("old")
    move_into_place(tmp_path / "new", tmp_path / "dst")
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["x"] and hidden(tmp_path) == []
    (tmp_path / "f.new").write_text("2")
    (tmp_path / "f").write_text("1")
    move_into_place(tmp_path / "f.new", tmp_path / "f")
    assert (tmp_path / "f").read_text() == "2" and not (tmp_path / "f.new").exists()


def test_write_embeddings_round_trips(tmp_path):
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    write_embeddings(tmp_path / "v.npy", ["a", "b", "c"], vectors)
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), vectors)
    write_embeddings(tmp_path / "v.parquet", ["a", "b", "c"], vectors)
    table = pq.read_table(tmp_path / "v.parquet")
    assert table.column("id").to_pylist() == ["a", "b", "c"]
    assert table.column("embedding").to_pylist() == vectors.tolist() and hidden(tmp_path) == []


# -- readers ---------------------------------------------------------------------------

def test_jsonl_errors_name_file_and_line(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_bytes(b'{"a": 1}\n\n{"a": 2,}\n')
    with pytest.raises(JsonLineError, match=r"data.jsonl:3: malformed JSON line \(.* at column 9\)") as err:
        list(read_jsonl(p))
    assert (err.value.path, err.value.line) == (p, 3)
    p.write_bytes(b'{"a": 1}\n["a", "b"]\n')
    with pytest.raises(DataFormatError, match=r"data.jsonl:2: expected a JSON object, got list"):
        list(read_jsonl(p))
    assert list(read_jsonl(p, objects=False)) == [(1, {"a": 1}), (2, ["a", "b"])]
    p.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataFormatError, match=r"data.jsonl:2: invalid UTF-8"):
        list(read_jsonl(p, errors="strict"))
    assert list(read_jsonl(p))[1] == (2, {"a": "\ufffd"})  # the default: public data carries some


def test_jsonl_matches_json_loads_and_reads_gzip_and_byte_ranges(tmp_path):
    rows = [{"text": t, "n": i} for i, t in enumerate(["plain", "naïve café", "tab\there", "line\u2028sep", "日本語"])]
    text = "".join(json.dumps(r, ensure_ascii=False) + ("\n\n" if i == 1 else "\r\n") for i, r in enumerate(rows))
    p = tmp_path / "c.jsonl"
    p.write_text(text, encoding="utf-8", newline="")
    expected = [json.loads(line) for line in text.split("\n") if line.strip()]
    assert [v for _, v in read_jsonl(p)] == expected == rows
    g = tmp_path / "c.jsonl.gz"
    g.write_bytes(gzip.compress(text.encode()))
    assert list(read_jsonl(g)) == list(read_jsonl(p))
    raw = p.read_bytes()
    start = raw.index(b'{"text": "tab')
    assert list(read_jsonl(p, byte_range=(start, len(raw)), first_line=5)) == [(5, rows[2]), (6, rows[3]), (7, rows[4])]


def test_csv_matches_the_csv_module_and_names_bad_lines(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b'text,id\r\n"two\nlines, quoted",1\rold mac,2\nlast,3')
    with open(p, newline="", encoding="utf-8") as f:
        expected = list(csv.reader(f))
    got = list(read_csv(p))
    assert [row for _, row in got] == expected
    assert [line for line, _ in got] == [1, 3, 4, 5]  # where each row ends
    assert [r for _, r in read_records(p)] == [dict(zip(expected[0], row)) for row in expected[1:]]
    p.write_bytes(b"text\nfine\n\xff\n")
    with pytest.raises(DataFormatError, match=r"t.csv:3: invalid UTF-8"):
        list(read_csv(p))
    assert [row for _, row in read_csv(p, errors="replace")][-1] == ["\ufffd"]


def test_records_of_every_format(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"text": "a", "id": 1}, {"text": "b", "id": 2}]), tmp_path / "r.parquet")
    assert list(read_records(tmp_path / "r.parquet")) == [(0, {"text": "a", "id": 1}), (1, {"text": "b", "id": 2})]
    (tmp_path / "r.tsv").write_text("text\tid\na\t1\nb\n")
    assert [r for _, r in read_records(tmp_path / "r.tsv")] == [{"text": "a", "id": "1"}, {"text": "b"}]
    (tmp_path / "r.txt").write_bytes(b"one\r\n\ntwo")
    assert list(read_records(tmp_path / "r.txt")) == list(read_lines(tmp_path / "r.txt")) == [(1, "one"), (2, ""), (3, "two")]
    with pytest.raises(DataFormatError, match=r"r.xml: unsupported file type"):
        list(read_records(tmp_path / "r.xml"))


def test_readers_stream(tmp_path):
    # the first record arrives before the reader has looked at the rest of the file
    p = tmp_path / "big.jsonl"
    p.write_text('{"text": "first"}\n' + "{broken\n" * 1000)
    records = read_records(p)
    assert next(records) == (1, {"text": "first"})
    with pytest.raises(JsonLineError, match="big.jsonl:2:"):
        next(records)


def test_read_texts_errors_name_the_place(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x", "id": 7}\n\n{"text": "y", "id": "b"}\n')
    assert read_texts(tmp_path / "a.jsonl", "text", "id") == (["7", "b"], ["x", "y"])
    (tmp_path / "a.jsonl").write_text('{"text": "x", "id": 7}\n{"body": "y"}\n')
    with pytest.raises(DataFormatError, match=r"a.jsonl:2: no key 'text'"):
        read_texts(tmp_path / "a.jsonl", "text")
    (tmp_path / "a.csv").write_text("body\nx\n")
    with pytest.raises(ValueError, match=r"a.csv: no column 'text'; columns are \['body'\]"):
        read_texts(tmp_path / "a.csv", "text")
    assert read_texts(tmp_path / "a.csv", "body") == (["0"], ["x"])
    pq.write_table(pa.table({"text": ["p", "q"], "id": [3, 4]}), tmp_path / "a.parquet")
    assert read_texts(tmp_path / "a.parquet", "text", "id") == (["3", "4"], ["p", "q"])
    with pytest.raises(ValueError, match=r"a.parquet: no column 'body'"):
        read_texts(tmp_path / "a.parquet", "body")


def test_read_texts_refuses_a_missing_id_naming_file_and_line(tmp_path):
    (tmp_path / "a.csv").write_text("id,text\n1,x\n,y\n")
    with pytest.raises(DataFormatError, match=r"a\.csv:3: no 'id' value"):
        read_texts(tmp_path / "a.csv", "text", "id")
    (tmp_path / "b.csv").write_text("text,id\nx,1\ny\n")  # a short row
    with pytest.raises(DataFormatError, match=r"b\.csv:3: no 'id' value"):
        read_texts(tmp_path / "b.csv", "text", "id")
    pq.write_table(pa.table({"text": ["p", "q"], "id": [3, None]}), tmp_path / "c.parquet")
    with pytest.raises(DataFormatError, match=r"c\.parquet: row 1: no 'id' value"):
        read_texts(tmp_path / "c.parquet", "text", "id")
