"""Reading texts from files and writing embeddings, for the command line.

    ids, texts = read_texts(Path("corpus.jsonl"), field="text")
    write_embeddings(Path("vectors.parquet"), ids, vectors)
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")


class DataFormatError(ValueError):
    """A malformed input file; the message says which file and line."""


def read_jsonl(path: str | Path, errors: str = "replace") -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file.

    errors="replace" reads invalid UTF-8 as U+FFFD (public data sets carry some);
    "strict" makes it an error naming the line.

    >>> next(read_jsonl("corpus.jsonl"))          # doctest: +SKIP
    (1, {'_id': '4983', 'title': '...', 'text': '...'})
    """
    path = Path(path)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError as err:
                raise DataFormatError(f"{path}:{number}: invalid UTF-8 ({err.reason} at byte {err.start})") from err
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}:{number}: malformed JSON line ({err.msg} at column {err.colno})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
            yield number, obj


def _decode_lines(path: Path) -> list[str]:
    lines = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                lines.append(raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{number}: invalid UTF-8 ({err.reason} at byte {err.start})") from err
    return lines


def read_texts(path: Path, field: str | None = None, id_field: str | None = None) -> tuple[list[str], list[str]]:
    """(ids, texts) from a .txt (one text a line), .jsonl, .csv or .parquet file.

    Ids come from id_field when given, else the row number."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise ValueError(f"{path}: unsupported input type {suffix!r}; use one of {', '.join(TEXT_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if suffix == ".txt":
        texts = _decode_lines(path)
        return [str(i) for i in range(len(texts))], texts
    if field is None:
        raise ValueError(f"{path}: pass --field to name the column or key that holds the text")
    if suffix == ".jsonl":
        rows = []
        for number, row in read_jsonl(path, errors="strict"):
            if field not in row:
                raise DataFormatError(f"{path}:{number}: no key {field!r} in this line")
            rows.append(row)
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if rows and field not in rows[0]:
            raise ValueError(f"{path}: no column {field!r}; columns are {list(rows[0])}")
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if field not in table.column_names:
            raise ValueError(f"{path}: no column {field!r}; columns are {table.column_names}")
        rows = table.to_pylist()
    texts = []
    for number, row in enumerate(rows):
        value = row[field]
        if not isinstance(value, str):
            raise ValueError(f"{path}: row {number} has a {type(value).__name__} in {field!r}, not text")
        texts.append(value)
    if id_field is None:
        ids = [str(i) for i in range(len(rows))]
    else:
        missing = [i for i, row in enumerate(rows) if id_field not in row]
        if missing:
            raise ValueError(f"{path}: row {missing[0]} has no {id_field!r}")
        ids = [str(row[id_field]) for row in rows]
    return ids, texts


def _replace_atomically(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_embeddings(path: Path, ids: list[str], vectors: np.ndarray) -> None:
    """Write .npy (the matrix) or .parquet (id and embedding columns), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, vectors)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = pa.array(np.ascontiguousarray(vectors).reshape(-1))
        column = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
        table = pa.table({"id": pa.array(ids, pa.string()), "embedding": column})

        def write(tmp: str) -> None:
            pq.write_table(table, tmp)
    else:
        raise ValueError(f"{path}: unsupported output type {suffix!r}; use .npy or .parquet")
    _replace_atomically(path, write)
