"""Training data: readers for JSONL, CSV/TSV and Parquet (gzip allowed), the
`data_config.json` of the all-mpnet-base-v2 recipe, and `TrainDataset`, the rows one
loss consumes.

A row is a tuple of texts (anchor, positive[, negative...]) plus an optional float label::

    >>> ds = TrainDataset.from_rows("toy", [("a", "b"), ("c", "d")])
    >>> len(ds), ds.n_columns
    (2, 2)

Files are streamed: one with more than `spill_rows` rows keeps its rows in a temporary
file (`RowStore`, a few bytes of memory per row) and its labels in a NumPy array, so a
multi-GB pair file does not become ~10x its size in Python objects.
"""
from __future__ import annotations

import itertools
import json
import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from .rowstore import RowStore

# Column names tried, in order, when a row is a dict and no columns were named.
TEXT_KEYS = ("anchor", "query", "sentence1", "text1", "question", "title", "positive", "pos",
             "sentence2", "text2", "answer", "body", "negative", "neg")
LABEL_KEYS = ("label", "score", "similarity")


class DataError(ValueError):
    """Training data that cannot be used; the message names the file and what to fix."""


def _fmt(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for ext, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"),
                     (".tsv", "tsv"), (".parquet", "parquet")):
        if name.endswith(ext):
            return fmt
    raise DataError(f"{path}: unknown format; use .jsonl, .csv, .tsv or .parquet (optionally .gz)")


def read_records(path: str | Path, limit: int | None = None) -> Iterator[Any]:
    """Stream raw records (lists or dicts) from a file, one at a time, so large files never
    sit in memory whole.

    >>> next(read_records("pairs.jsonl"))      # doctest: +SKIP
    ['What is a hop?', 'A flower used in beer.']
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    # errors="replace": real corpora (Quora) carry a few invalid UTF-8 bytes; one bad byte
    # should not stop a run of millions of rows.
    if _fmt(path) == "tsv":
        records = _tsv_records(path)
    else:
        records = (rec for _, rec in io.read_records(path, errors="replace", objects=False))
    try:
        yield from itertools.islice(records, limit)   # stops before reading a line past the limit
    except io.JsonLineError as e:
        raise DataError(f"{e.path}:{e.line}: not valid JSON ({e.reason})") from None


def _tsv_records(path: Path) -> Iterator[Any]:
    """TSV with a header row of known column names gives dicts; one without (Quora) gives lists."""
    rows = io.read_csv(path, delimiter="\t", errors="replace")
    first = next(rows, None)
    if first is None:
        return
    header = first[1]
    has_header = any(h.strip().lower() in TEXT_KEYS + LABEL_KEYS for h in header)
    if not has_header:
        yield header
    for _, rec in rows:
        yield dict(zip(header, rec)) if has_header else rec


def _to_row(rec: Any, columns: Sequence[str] | None, label_column: str | None,
            where: str) -> tuple[tuple[str, ...], float | None]:
    """One record -> (texts, label)."""
    if isinstance(rec, dict):
        if label_column is None:
            label_column = next((k for k in LABEL_KEYS if k in rec), None)
        label = rec.get(label_column) if label_column else None
        if columns:
            missing = [c for c in columns if c not in rec]
            if missing:
                raise DataError(f"{where}: missing column(s) {missing}; the row has {sorted(rec)}")
            texts = [rec[c] for c in columns]
        elif "texts" in rec or "set" in rec:   # the 1B-pairs script's {"set": [...]} rows
            texts = list(rec.get("texts") or rec.get("set"))
        else:
            texts = [rec[k] for k in TEXT_KEYS if k in rec and isinstance(rec[k], str)]
    elif isinstance(rec, (list, tuple)):
        texts, label = list(rec), None
        if columns:
            idx = [int(c) for c in columns]
            texts = [rec[i] for i in idx]
        if label_column is not None:
            label = rec[int(label_column)]
    else:
        raise DataError(f"{where}: a row must be a JSON list or object, got {type(rec).__name__}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"{where}: column {bad[0]} is {type(texts[bad[0]]).__name__}, not text")
    return tuple(texts), (None if label is None or label == "" else float(label))


@dataclass
class TrainDataset:
    """Rows of texts (and optional labels) from one source, with its sampling weight.

    `rows` is a list of tuples, or a `RowStore` for files larger than `spill_rows`
    (`labels` then is a float64 NumPy array); both index the same way: `ds.rows[r][c]`."""

    name: str
    rows: Sequence[tuple[str, ...]]
    labels: Sequence[float] | None = None
    weight: float = 1.0
    source: str = ""

    @property
    def n_columns(self) -> int:
        if isinstance(self.rows, RowStore):
            return self.rows.n_columns     # counted while writing; no pass over the file
        return min((len(r) for r in self.rows), default=0)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_rows(cls, name: str, rows: Iterable[Sequence[str]], labels: Sequence[float] | None = None,
                  weight: float = 1.0) -> "TrainDataset":
        """Build from in-memory rows: `TrainDataset.from_rows("qa", [("q", "a")])`."""
        return cls(name, [tuple(r) for r in rows], list(labels) if labels is not None else None,
                   float(weight), "memory")

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None, weight: float = 1.0,
                  columns: Sequence[str] | None = None, label_column: str | None = None,
                  limit: int | None = None, spill_rows: int | None = 100_000,
                  spill_dir: str | Path | None = None) -> "TrainDataset":
        """Stream a file: `TrainDataset.from_file("pairs.jsonl.gz", weight=3)`.

        Past `spill_rows` rows (None: never) the rows move to a `RowStore` in `spill_dir`
        (default: the system temp folder) and the labels to a float64 array."""
        path = Path(path)
        rows: list[tuple[str, ...]] | RowStore = []
        labels: list[float | None] | array = []
        n_labelled = 0
        for i, rec in enumerate(read_records(path, limit), 1):
            texts, label = _to_row(rec, columns, label_column, f"{path} row {i}")
            if isinstance(rows, list) and spill_rows is not None and len(rows) >= spill_rows:
                # decided while streaming: small files stay plain lists, exactly as before
                rows, labels = _spill(rows, labels, spill_dir)
            rows.append(texts)
            n_labelled += label is not None
            if isinstance(labels, array):
                labels.append(0.0 if label is None else label)   # None rows are rejected below
            else:
                labels.append(label)
        if isinstance(rows, RowStore):
            rows.seal()
        if 0 < n_labelled < len(rows):
            raise DataError(f"{path}: some rows have a label and some do not")
        out_labels: Any = None
        if n_labelled:
            out_labels = np.array(labels, dtype=np.float64) if isinstance(labels, array) else labels
        return cls(name or _stem(path), rows, out_labels, float(weight), str(path))

    def stats(self, n: int = 1000, count: Callable[[list[str]], list[int]] | None = None) -> dict[str, Any]:
        """Column statistics over the first `n` rows, for the model card: lengths in tokens
        when `count` (e.g. `enc.count_tokens`) is given, else in words."""
        head = self.rows[:n]
        out: dict[str, Any] = {"name": self.name, "rows": len(self.rows), "weight": self.weight, "columns": [],
                               "unit": "tokens" if count else "words"}
        for c in range(self.n_columns):
            texts = [r[c] for r in head]
            sizes = count(texts) if count else [len(t.split()) for t in texts]
            out["columns"].append({
                "min": min(sizes, default=0), "mean": round(sum(sizes) / max(len(sizes), 1), 2),
                "max": max(sizes, default=0)})
        if self.labels is not None and len(self.labels):
            # float(): NumPy labels (spilled files) must stay JSON-plain for the model card
            lab = [float(x) for x in self.labels[:n]]
            out["label"] = {"min": min(lab), "mean": round(sum(lab) / len(lab), 4), "max": max(lab)}
        # `is not None`, not truthiness: a NumPy array has no truth value
        out["samples"] = [list(r) + ([float(self.labels[i])] if self.labels is not None else [])
                          for i, r in enumerate(head[:3])]
        return out


def _spill(rows: list[tuple[str, ...]], labels: list[float | None],
           spill_dir: str | Path | None) -> tuple[RowStore, array]:
    """Move the rows read so far to a RowStore and the labels to a compact float array."""
    store = RowStore(spill_dir)
    store.extend(rows)
    return store, array("d", (0.0 if lab is None else lab for lab in labels))


def _stem(path: Path | str, keep_dirs: bool = False) -> str:
    name = str(path) if keep_dirs else Path(path).name
    for suf in (".gz", ".jsonl", ".json", ".csv", ".tsv", ".parquet"):
        name = name.removesuffix(suf)
    return name


@dataclass
class DatasetSpec:
    """Where one dataset lives and how much of each batch mix it gets (config form)."""

    path: str
    weight: float = 1.0
    name: str | None = None
    columns: list[str] | None = None
    label_column: str | None = None
    limit: int | None = None
    spill_rows: int | None = 100_000      # larger files keep rows on disk (see from_file)
    spill_dir: str | None = None
    extra: dict = field(default_factory=dict)

    def load(self, base: Path | None = None) -> TrainDataset:
        p = Path(self.path)
        if base is not None and not p.is_absolute():
            p = base / p
        check_weight(self.weight, self.name or self.path)
        return TrainDataset.from_file(p, self.name, self.weight, self.columns, self.label_column, self.limit,
                                      spill_rows=self.spill_rows, spill_dir=self.spill_dir)


def check_weight(weight: float, name: str) -> None:
    if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise DataError(f"dataset {name!r}: weight must be a number > 0, got {weight!r}")


def load_data_config(path: str | Path) -> list[DatasetSpec]:
    """Read a `data_config.json`: a list of `{"name", "lines", "weight"}`; names are files
    relative to the config's folder (the all-mpnet-base-v2 recipe's format).

    >>> [s.weight for s in load_data_config("data_config.json")]   # doctest: +SKIP
    [36, 12]
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: expected a non-empty JSON list of {{'name','lines','weight'}}")
    specs = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "name" not in e:
            raise DataError(f"{path} entry {i}: needs at least a 'name'")
        check_weight(e.get("weight", 1), e["name"])
        p = Path(e["name"])
        specs.append(DatasetSpec(str(p if p.is_absolute() else path.parent / p), float(e.get("weight", 1)),
                                 name=e.get("dataset_name") or _stem(e["name"], keep_dirs=True), columns=e.get("columns"),
                                 label_column=e.get("label_column"), limit=e.get("limit")))
    return specs


def weights_from_lines(lines: dict[str, int], total_weight: int) -> dict[str, int]:
    """The mpnet_stackexchange_v1 rule: weight = int(lines / total_lines * total_weight),
    at least 1 so that no dataset silently drops out.

    >>> weights_from_lines({"a": 300, "b": 100}, 100)
    {'a': 75, 'b': 25}
    """
    total = sum(lines.values())
    if total <= 0:
        raise DataError("weights_from_lines: the datasets have no lines")
    return {k: max(1, int(v / total * total_weight)) for k, v in lines.items()}


def write_data_config(path: str | Path, files: dict[str, str | Path], total_weight: int) -> list[dict]:
    """Count lines of each file and write a data_config.json weighted by `weights_from_lines`."""
    path = Path(path)
    lines = {}
    for name, f in files.items():
        lines[name] = sum(1 for _ in read_records(f))
    weights = weights_from_lines(lines, total_weight)
    entries = [{"name": str(files[k]), "lines": lines[k], "weight": weights[k]} for k in files]
    with io.atomic_write(path, "w") as f:
        f.write(json.dumps(entries, indent=1) + "\n")
    return entries
