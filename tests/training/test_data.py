from __future__ import annotations

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentembed.training.data import (DataError, TrainDataset, load_data_config, read_records, weights_from_lines,
                                     write_data_config)

ROWS = [{"anchor": f"q{i}", "positive": f"p{i}", "negative": f"n{i}"} for i in range(5)]


def write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "jsonl.gz":
        with gzip.open(path, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    elif fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "parquet"])
def test_formats_read_the_same(tmp_path, fmt):
    p = tmp_path / f"trip.{fmt}"
    write(p, ROWS, fmt)
    ds = TrainDataset.from_file(p)
    assert ds.rows == [(f"q{i}", f"p{i}", f"n{i}") for i in range(5)]
    assert ds.name == "trip" and ds.n_columns == 3 and ds.labels is None
    two = TrainDataset.from_file(p, columns=["anchor", "positive"], limit=2)
    assert two.rows == [("q0", "p0"), ("q1", "p1")]


def test_lists_labels_and_tsv(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('["a", "b"]\n\n["c", "d"]\n')
    assert TrainDataset.from_file(p).rows == [("a", "b"), ("c", "d")]
    s = tmp_path / "sts.jsonl"
    s.write_text('{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')
    ds = TrainDataset.from_file(s)
    assert ds.rows == [("a", "b")] and ds.labels == [0.5]
    t = tmp_path / "q.tsv"
    t.write_bytes(b"1\tWhy \xff?\tHow?\t7\n0\tx\ty\t8\n")   # Quora-like, no header, bad UTF-8
    recs = list(read_records(t))
    assert recs[0][1] == "Why \ufffd?" and len(recs) == 2


def test_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        TrainDataset.from_file(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('["a", "b"]\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        TrainDataset.from_file(bad)
    cfg = tmp_path / "data_config.json"
    cfg.write_text(json.dumps([{"name": "x.jsonl", "lines": 3, "weight": 0}]))
    with pytest.raises(DataError, match="weight must be a number > 0"):
        load_data_config(cfg)
    with pytest.raises(DataError, match="unknown format"):
        list(read_records(cfg.with_suffix(".txt").write_text("x") and cfg.with_suffix(".txt")))


def test_data_config_and_weights_rule(tmp_path):
    (tmp_path / "a.jsonl").write_text('["a", "b"]\n' * 3)
    (tmp_path / "b.jsonl").write_text('["c", "d"]\n')
    cfg = tmp_path / "data_config.json"
    cfg.write_text(json.dumps([{"name": "a.jsonl", "lines": 3, "weight": 75}, {"name": "b.jsonl", "lines": 1, "weight": 25}]))
    specs = load_data_config(cfg)
    assert [s.weight for s in specs] == [75, 25] and [s.name for s in specs] == ["a", "b"]
    assert len(specs[0].load()) == 3
    assert weights_from_lines({"a": 300, "b": 100}, 100) == {"a": 75, "b": 25}
    assert weights_from_lines({"a": 1000, "b": 1}, 10) == {"a": 9, "b": 1}
    entries = write_data_config(tmp_path / "w.json", {"a": tmp_path / "a.jsonl", "b": tmp_path / "b.jsonl"}, 100)
    assert [e["weight"] for e in entries] == [75, 25]
