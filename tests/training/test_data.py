from __future__ import annotations

import csv
import gc
import gzip
import json
import os
import pickle
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentembed.training.data import (DataError, DatasetSpec, TrainDataset, load_data_config, read_records,
                                     weights_from_lines, write_data_config)
from sentembed.training.rowstore import RowStore
from sentembed.training.samplers import MixtureBatchSampler

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


# -- spilling large files to a RowStore ------------------------------------------------

def _tricky_rows(n):
    """Rows with non-ASCII, tabs, newlines, quotes, commas and U+2028 inside the texts."""
    extra = ["naïve café", "tab\there", "new\nline", 'say "hi", ok', "日本語 ✓", "line\u2028sep", "back\\slash"]
    return [{"anchor": f"q{i} {extra[i % len(extra)]}", "positive": f"p{i} {extra[(i + 3) % len(extra)]}",
             "score": i / n} for i in range(n)]


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "tsv", "parquet"])
def test_spilled_equals_in_memory(tmp_path, fmt):
    rows = _tricky_rows(300)
    p = tmp_path / f"big.{fmt}"
    if fmt == "tsv":
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
            w.writeheader()
            w.writerows(rows)
    else:
        write(p, rows, fmt)
    mem = TrainDataset.from_file(p, spill_rows=None)
    small = TrainDataset.from_file(p, spill_rows=1000)           # under the threshold: a plain list
    disk = TrainDataset.from_file(p, spill_rows=10, spill_dir=tmp_path)
    assert isinstance(mem.rows, list) and isinstance(small.rows, list) and isinstance(disk.rows, RowStore)
    assert small.rows == mem.rows and len(mem.rows) == 300
    assert len(disk) == len(disk.rows) == 300 and disk.n_columns == mem.n_columns == 2
    assert list(disk.rows) == mem.rows and [disk.rows[i] for i in range(300)] == mem.rows
    assert mem.rows[1][0] == "q1 tab\there" and mem.rows[2][0] == "q2 new\nline"
    assert isinstance(disk.labels, np.ndarray) and disk.labels.dtype == np.float64
    assert [disk.labels[i] for i in range(300)] == mem.labels and isinstance(disk.labels[5], float)
    assert disk.stats(n=50) == mem.stats(n=50)
    json.dumps(disk.stats())                                      # the model card stays plain JSON


def test_spill_threshold_and_spec(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps([f"a{i}", f"b{i}", "c"][: 2 + i % 2]) + "\n" for i in range(20)))
    assert isinstance(TrainDataset.from_file(p, spill_rows=20).rows, list)     # exactly at the limit
    ds = TrainDataset.from_file(p, spill_rows=19)
    assert isinstance(ds.rows, RowStore) and ds.n_columns == 2 and ds.labels is None
    assert os.path.dirname(ds.rows.path) == tempfile.gettempdir()
    spec = DatasetSpec(str(p), spill_rows=5, spill_dir=str(tmp_path))
    spilled = spec.load()
    assert isinstance(spilled.rows, RowStore) and Path(spilled.rows.path).parent == tmp_path
    assert isinstance(DatasetSpec(str(p)).load().rows, list)                    # default unchanged


def test_rowstore_indexing_pickle_and_cleanup(tmp_path):
    rows = [(f"r{i}", "é\t\"x\"\n", "\ud800" if i == 3 else "") for i in range(25)]
    store = RowStore.from_rows(rows, spill_dir=tmp_path)
    assert store[-1] == rows[-1] and store[-25] == rows[0] and store[np.int64(3)] == rows[3]
    for bad in (25, -26, 10**9):
        with pytest.raises(IndexError):
            store[bad]
    with pytest.raises(TypeError):
        store[1.0]
    assert store[3:7] == rows[3:7] and store[::5] == rows[::5] and store[-3:] == rows[-3:]
    assert store[20:5] == [] and store[:] == rows and store[::-1] == rows[::-1]
    assert rows[7] in store and store.index(rows[7]) == 7
    with pytest.raises(RuntimeError):
        store.append(("late",))
    copy = pickle.loads(pickle.dumps(store))
    assert list(copy) == rows and copy.n_columns == 3
    path = store.path
    del copy
    gc.collect()
    assert os.path.exists(path)                    # the copy never deletes the owner's file
    ds = TrainDataset("t", store)
    assert pickle.loads(pickle.dumps(ds)).rows[4] == rows[4]
    del store, ds
    gc.collect()
    assert not os.path.exists(path)


def test_spilled_batches_through_sampler(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps([f"a{i}", f"b{i}"]) + "\n" for i in range(100)))
    ds = TrainDataset.from_file(p, spill_rows=10)
    sampler = MixtureBatchSampler([ds.rows], batch_size=8, seed=0)
    i, batch = next(iter(sampler))
    assert [ds.rows[r][0] for r in batch] == [f"a{r}" for r in batch]


def test_spilling_saves_memory(tmp_path):
    p = tmp_path / "many.jsonl"
    with open(p, "w", encoding="utf-8") as f:
        for i in range(50_000):
            f.write(json.dumps({"anchor": f"what is the meaning of question number {i}?",
                                "positive": f"the answer to question {i} is a longer sentence.", "score": 0.5}) + "\n")

    def peak(**kw):
        gc.collect()
        tracemalloc.start()
        try:
            ds = TrainDataset.from_file(p, **kw)
            assert len(ds) == 50_000
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    in_memory, spilled = peak(spill_rows=None), peak(spill_rows=1000)
    assert spilled < in_memory / 4, (spilled, in_memory)


def test_errors_with_spilling(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    ds = TrainDataset.from_file(empty, spill_rows=0)
    assert len(ds) == 0 and ds.n_columns == 0 and ds.labels is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text('["a", "b"]\n' * 30 + "{oops\n")
    with pytest.raises(DataError, match=r"bad.jsonl:31: not valid JSON"):
        TrainDataset.from_file(bad, spill_rows=10)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"anchor": "a", "positive": "b", "label": 1}\n' * 20 + '{"anchor": "a", "positive": "b"}\n')
    with pytest.raises(DataError, match="some rows have a label and some do not"):
        TrainDataset.from_file(mixed, spill_rows=10)
    text = tmp_path / "num.jsonl"
    text.write_text('["a", "b"]\n' * 20 + '["a", 3]\n')
    with pytest.raises(DataError, match=r"row 21: column 1 is int"):
        TrainDataset.from_file(text, spill_rows=10)
