"""Reading rows of a segment file, leaving none of its pages in this process's memory: the
fp32 rows an exact search re-scores, and every row, in blocks, for writing a copy or a merge,
on indexes larger than memory.

Touching rows through a segment's own memory map would map the page-cache folio around each
(read-ahead, large folios: hundreds of KB a row), all counted as this process's memory until
the map is dropped. `row_reader` maps the file once more with read-ahead off and lets the
pages go every few rows; `read_rows` reads with pread, where madvise is missing.

    read = row_reader(open(path, "rb", buffering=0), n_rows, dim)
    vectors = read(np.array([7, 3, 99]))
    for block in read_blocks(path, n_rows, dim, 65536): ...
"""
from __future__ import annotations

import functools
import mmap
import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np


def read_rows(file: Path | BinaryIO, dim: int, rows: np.ndarray) -> np.ndarray:
    """float32 `rows` of a segment file (a path, or a file held open), read with pread;
    consecutive rows in one call."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb", buffering=0) as f:
            return read_rows(f, dim, rows)
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    buf = np.empty((len(rows), dim), dtype=np.float32)
    row_bytes = dim * 4
    cuts = np.flatnonzero(np.diff(ordered) != 1) + 1
    for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(rows)]])):
        if hi <= lo:
            continue
        view = memoryview(buf[lo:hi]).cast("B")
        pos, done = int(ordered[lo]) * row_bytes, 0
        while done < len(view):
            n = os.preadv(file.fileno(), [view[done:]], pos + done)
            if n <= 0:
                raise RuntimeError(f"index segment {file.name} ends early at byte {pos + done}: the index is damaged")
            done += n
    out = np.empty_like(buf)
    out[order] = buf
    return out


# Rows read between two releases of the mapping's pages: a fault maps the page-cache folio
# around its row (up to 2 MB with large folios), so this bounds the memory a read holds: about
# 32 MB on 768-d rows where 64 rows held 102 MB, the most an index search held beyond its int8
# copy (benchmarks/RESULTS.md); each release costs a little (a search 3% slower than at 64).
MAPPED_READ_ROWS = 16


def row_reader(file: BinaryIO, n_rows: int, dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function reading chosen float32 rows of a segment file held open, that leaves none of
    them in this process's memory: through a mapping of its own, read-ahead off, whose pages
    are let go every MAPPED_READ_ROWS rows (they stay in the page cache; a search reading through
    the mapping meanwhile only faults them in again); `read_rows` where madvise is missing.
    """
    if n_rows == 0 or not all(hasattr(mmap, f) for f in ("MADV_RANDOM", "MADV_DONTNEED")):
        return functools.partial(read_rows, file, dim)
    mapping = mmap.mmap(file.fileno(), n_rows * dim * 4, access=mmap.ACCESS_READ)
    mapping.madvise(mmap.MADV_RANDOM)
    matrix = np.frombuffer(mapping, dtype=np.float32).reshape(n_rows, dim)

    def read(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), dim), dtype=np.float32)
        for start in range(0, len(rows), MAPPED_READ_ROWS):
            np.take(matrix, rows[start:start + MAPPED_READ_ROWS], axis=0, out=out[start:start + MAPPED_READ_ROWS])
            mapping.madvise(mmap.MADV_DONTNEED)
        return out
    return read


def check_size(path: Path, n_rows: int, dim: int) -> int:
    """The byte size of a segment file, which must hold `n_rows` float32 rows of `dim`."""
    size, expected = os.stat(path).st_size, n_rows * dim * 4
    if size != expected:
        raise RuntimeError(f"index segment {path} has {size} bytes, the catalog expects {expected}: the index is damaged")
    return size


def read_blocks(path: Path, n_rows: int, dim: int, rows: int) -> Iterator[np.ndarray]:
    """Every float32 row of a segment file, `rows` at a time, through a mapping whose pages are
    let go after each block: a pass over a segment larger than memory then holds one block in
    this process, where a plain map would count every page read until the kernel takes them
    back. A block stays readable after it (a page let go is read again)."""
    size = check_size(path, n_rows, dim)
    if n_rows == 0:
        yield np.zeros((0, dim), np.float32)  # the copies' writers need a matrix to know the width
        return
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    matrix = np.frombuffer(mapping, dtype=np.float32).reshape(n_rows, dim)
    for start in range(0, n_rows, rows):
        yield matrix[start : start + rows]
        if hasattr(mmap, "MADV_DONTNEED"):
            mapping.madvise(mmap.MADV_DONTNEED)
