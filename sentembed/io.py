"""Reading records from files and writing files atomically: one floor for every use.

Readers stream (bounded memory, so a training set or corpus of many GB is fine) and every
error names the file and the line. Writers replace a file or directory whole: a reader, or
the next run after a crash, sees the old content or the new, never a part.

    for line, row in read_records(Path("corpus.jsonl")): ...     # also .csv .tsv .parquet .txt
    ids, texts = read_texts(Path("corpus.jsonl"), field="text")
    with atomic_write(Path("report.json"), "w") as f:
        f.write(json.dumps(report))
    write_embeddings(Path("vectors.parquet"), ids, vectors)
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # NumPy is imported where embeddings are written: `sentembed --help` stays fast
    import numpy as np

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")
FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
           ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


class DataFormatError(ValueError):
    """A malformed input file; the message says which file and line."""


class JsonLineError(DataFormatError):
    """A line that is not valid JSON; `path`, `line` and `reason` say where and why."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: malformed JSON line ({reason})")
        self.path, self.line, self.reason = path, line, reason

    def __reduce__(self):  # rebuilt from its parts when it crosses a process (Ray workers)
        return type(self), (self.path, self.line, self.reason)


# -- reading ---------------------------------------------------------------------------

def file_format(path: str | Path) -> str | None:
    """The format a file's suffix names (a trailing .gz aside), or None.

    >>> file_format("pairs.jsonl.gz")
    'jsonl'
    """
    name = Path(path).name.lower().removesuffix(".gz")
    return FORMATS.get(Path(name).suffix)


def _open_bytes(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _decode(raw: bytes, path: Path, number: int, errors: str) -> str:
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}:{number}: invalid UTF-8 ({err.reason} at byte {err.start})") from err


def read_lines(path: str | Path, errors: str = "strict") -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending) for every line, blank ones included.

    errors="strict" makes invalid UTF-8 an error naming the line; "replace" reads it as U+FFFD.
    """
    path = Path(path)
    with _open_bytes(path) as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, _decode(raw, path, number, errors).rstrip("\r\n")


def read_jsonl(path: str | Path, errors: str = "replace", objects: bool = True,
               byte_range: tuple[int, int] | None = None, first_line: int = 1) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line of a JSON-lines file (.gz allowed).

    errors="replace" reads invalid UTF-8 as U+FFFD (public data sets carry some); "strict"
    makes it an error naming the line. objects=False also accepts lists and other values.
    byte_range=(start, stop) reads only the lines that begin in it; first_line is the
    number of the line at `start`, for the error messages.

    >>> next(read_jsonl("corpus.jsonl"))          # doctest: +SKIP
    (1, {'_id': '4983', 'title': '...', 'text': '...'})
    """
    path = Path(path)
    with _open_bytes(path) as handle:
        lines = handle if byte_range is None else _byte_range(handle, *byte_range)
        for number, raw in enumerate(lines, start=first_line):
            line = _decode(raw, path, number, errors)
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise JsonLineError(path, number, f"{err.msg} at column {err.colno}") from None
            if objects and not isinstance(value, dict):
                raise DataFormatError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
            yield number, value


def _byte_range(handle: IO[bytes], start: int, stop: int) -> Iterator[bytes]:
    handle.seek(start)
    offset = start
    while offset < stop:
        raw = handle.readline()
        if not raw:
            return
        offset += len(raw)
        yield raw


def read_csv(path: str | Path, delimiter: str = ",", errors: str = "strict") -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for every row, the header first; quoted fields may span lines.

    Lines end at \\n, \\r\\n or \\r, as `open(newline="")` reads them; .gz allowed."""
    path = Path(path)
    with _open_bytes(path) as handle:
        reader = csv.reader(_universal_lines(handle, path, errors), delimiter=delimiter)
        for row in reader:
            yield reader.line_num, row


def _universal_lines(handle: IO[bytes], path: Path, errors: str) -> Iterator[str]:
    number = 0
    for raw in handle:
        for piece in raw.splitlines(keepends=True):  # bytes split at \n, \r\n and \r only
            number += 1
            yield _decode(piece, path, number, errors)


def read_parquet(path: str | Path, batch_size: int = 4096) -> Iterator[tuple[int, dict]]:
    """(row number from 0, row) for every row, read a batch of row groups at a time."""
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            yield number, row
            number += 1


def read_records(path: str | Path, errors: str = "strict", objects: bool = True) -> Iterator[tuple[int, Any]]:
    """(where, record) from any supported file, streamed, chosen by suffix (.gz allowed):

    .jsonl/.json/.ndjson: (line, JSON value; objects only unless objects=False)
    .csv/.tsv: (line, {header: field}; a short row lacks the last keys)
    .parquet: (row from 0, dict)      .txt: (line, the line's text)

    >>> [row for _, row in read_records("pairs.csv")]     # doctest: +SKIP
    [{'anchor': 'q', 'positive': 'p'}]
    """
    path = Path(path)
    fmt = file_format(path)
    if fmt == "jsonl":
        yield from read_jsonl(path, errors, objects)
    elif fmt in ("csv", "tsv"):
        rows = read_csv(path, "," if fmt == "csv" else "\t", errors)
        _, header = next(rows, (0, []))
        for number, fields in rows:
            yield number, dict(zip(header, fields))
    elif fmt == "parquet":
        yield from read_parquet(path)
    elif fmt == "txt":
        yield from read_lines(path, errors)
    else:
        raise DataFormatError(f"{path}: unsupported file type; use one of {', '.join(FORMATS)} (optionally .gz)")


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
        texts = [text for _, text in read_lines(path)]
        return [str(i) for i in range(len(texts))], texts
    if field is None:
        raise ValueError(f"{path}: pass --field to name the column or key that holds the text")
    columns = _columns(path, suffix)
    if columns is not None and field not in columns:
        raise ValueError(f"{path}: no column {field!r}; columns are {columns}")
    ids, texts = [], []
    for row_no, (number, row) in enumerate(read_records(path)):
        if field not in row:
            where = f"{path}:{number}: no key {field!r} in this line" if suffix == ".jsonl" else \
                f"{path}: row {row_no} has no {field!r}"
            raise DataFormatError(where)
        if not isinstance(row[field], str):
            raise ValueError(f"{path}: row {row_no} has a {type(row[field]).__name__} in {field!r}, not text")
        texts.append(row[field])
        if id_field is not None:
            if row.get(id_field) in (None, ""):  # absent, a short CSV row, or null: never the id "None"
                where = f"{path}:{number}" if suffix != ".parquet" else f"{path}: row {number}"
                raise DataFormatError(f"{where}: no {id_field!r} value")
            ids.append(str(row[id_field]))
    return (ids if id_field is not None else [str(i) for i in range(len(texts))]), texts


def _columns(path: Path, suffix: str) -> list[str] | None:
    """The column names of a .csv (its header) or .parquet (its schema); None for JSON lines."""
    if suffix == ".csv":
        return next(read_csv(path), (0, None))[1]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).schema_arrow.names
    return None


# -- writing ---------------------------------------------------------------------------

def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (where the platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hidden_beside(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Write `path` whole or not at all: a temporary file beside it, fsynced, renamed over it.

    On any exception the temporary file is removed and `path` keeps its old content. A
    library that writes to a file name (safetensors, FAISS) may write to `handle.name`,
    the temporary file; it is fsynced and renamed like the rest. Text mode is UTF-8.

    >>> with atomic_write("report.json", "w") as f:      # doctest: +SKIP
    ...     f.write(json.dumps(report))
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = _hidden_beside(path, ".tmp")
    try:
        # "x": created exclusively, with the permissions a plain open() gives (umask applies)
        with open(tmp, mode.replace("w", "x"), encoding=(encoding or "utf-8") if mode == "w" else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory in a hidden staging folder beside `path`, then swap it in whole.

    On any exception the staging folder is removed and `path` is left as it was.

    >>> with atomic_dir("model") as staging:             # doctest: +SKIP
    ...     (staging / "config.json").write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _hidden_beside(path)
    staging.mkdir()
    try:
        yield staging
        move_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def move_into_place(src: Path, dst: Path) -> None:
    """Rename a finished file or directory `src` over `dst`, durably.

    A file is replaced in one atomic rename. A directory cannot be renamed over a full one,
    so the old tree steps aside as `.NAME.old` first: between those two renames, a moment,
    `dst` is absent; it is never a mixture of old and new."""
    src, dst = Path(src), Path(dst)
    _fsync_tree(src)
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
    fsync_dir(dst.parent)


def _fsync_tree(path: Path) -> None:
    """fsync every file (and folder) under `path`: the data must be on disk before the rename
    that makes it visible, or a crash can leave a renamed tree of empty files."""
    if not path.is_dir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        return
    for folder, _, names in os.walk(path):
        for name in names:
            if os.path.islink(os.path.join(folder, name)):
                continue
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(folder))


EMBEDDING_SUFFIXES = (".npy", ".parquet")


def check_embeddings_path(path: str | Path) -> None:
    """Refuse an output `write_embeddings` cannot write, before any work is spent on it."""
    suffix = Path(path).suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise ValueError(f"{path}: unsupported output type {suffix!r}; use .npy or .parquet")


def write_embeddings(path: Path, ids: list[str], vectors: np.ndarray) -> None:
    """Write .npy (the matrix) or .parquet (id and embedding columns), atomically."""
    import numpy as np

    path = Path(path)
    check_embeddings_path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        if suffix == ".npy":
            np.save(handle, vectors)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            flat = pa.array(np.ascontiguousarray(vectors).reshape(-1))
            column = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
            pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "embedding": column}), handle)
