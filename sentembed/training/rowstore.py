"""A compact, read-only sequence of text rows kept in a temporary file, so a multi-GB
training file costs a few bytes of memory per row instead of ~10x its size as Python
tuples of str.

Rows are written once, as one JSON list per line (UTF-8), and read back with `os.pread`
through byte offsets held in a NumPy int64 array::

    >>> store = RowStore.from_rows([("a", "b"), ("c", "d", "e")])
    >>> len(store), store[-1], store[:1], store.n_columns
    (2, ('c', 'd', 'e'), [('a', 'b')], 2)
"""
from __future__ import annotations

import json
import operator
import os
import tempfile
import weakref
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

# Rows read per pread when iterating: one system call per block instead of per row.
_ITER_BLOCK = 1024


def _cleanup(fd: int, path: str, owner_pid: int | None) -> None:
    """Close our descriptor; delete the file only in the process that created it, so a
    forked child or an unpickled copy never removes the parent's data."""
    try:
        os.close(fd)
    except OSError:
        pass
    if owner_pid is not None and owner_pid == os.getpid():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _pread(fd: int, size: int, offset: int) -> bytes:
    # pread takes the position explicitly: no shared file offset, so reads are safe from
    # threads and from processes forked after the store was built
    out = os.pread(fd, size, offset)
    while len(out) < size:             # short reads are legal; loop until done or EOF
        more = os.pread(fd, size - len(out), offset + len(out))
        if not more:
            raise OSError(f"row store file truncated: wanted {size} bytes at {offset}, got {len(out)}")
        out += more
    return out


def _decode(raw: bytes) -> tuple[str, ...]:
    # surrogatepass: JSON input may hold lone surrogates ("\\ud800"); keep them as they were
    return tuple(json.loads(raw.decode("utf-8", "surrogatepass")))


class RowStore(Sequence[tuple[str, ...]]):
    """Rows of texts in a temporary file: build with `append`/`extend`, then `seal()`;
    afterwards it is a read-only sequence (`len`, `store[i]`, `store[a:b]` -> list, iteration).

    The file lives in `spill_dir` (default `tempfile.gettempdir()`) and is deleted when the
    store is garbage-collected, `close()`d or the process exits. Pickling sends the path and
    offsets; the copy reads the same file and never deletes it.

    >>> s = RowStore()
    >>> s.extend([("q1", "a1"), ("q2", "a2")]); s.seal()
    >>> s[0], list(s)[1]
    (('q1', 'a1'), ('q2', 'a2'))
    """

    def __init__(self, spill_dir: str | Path | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="sentembed-rows-", suffix=".jsonl",
                                         dir=None if spill_dir is None else str(spill_dir))
        self._fd = fd
        self._finalizer = weakref.finalize(self, _cleanup, fd, self.path, os.getpid())
        # the writer gets its own descriptor so that sealing can close it and keep `_fd`
        self._writer: Any = open(self.path, "wb", buffering=1 << 20)
        self._pos = 0
        self._growing: array | None = array("q", [0])    # 8 bytes a row while writing
        self._offsets = np.zeros(1, dtype=np.int64)
        self._n_columns: int | None = None

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[str]], spill_dir: str | Path | None = None) -> "RowStore":
        """Write `rows` and seal: `RowStore.from_rows([("q", "a")])`."""
        store = cls(spill_dir)
        store.extend(rows)
        store.seal()
        return store

    # -- writing ---------------------------------------------------------------------
    def append(self, row: Sequence[str]) -> None:
        """Add one row (a sequence of str); only before `seal()`."""
        if self._writer is None:
            raise RuntimeError("RowStore is sealed; it is read-only")
        # ensure_ascii=False keeps non-ASCII text at its UTF-8 size; JSON escapes every
        # newline, so a row is exactly one line and offsets alone delimit it
        data = json.dumps(list(row), ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"
        self._writer.write(data)
        self._pos += len(data)
        self._growing.append(self._pos)  # type: ignore[union-attr]
        # tracked here so that n_columns never needs a pass over the file
        self._n_columns = len(row) if self._n_columns is None else min(self._n_columns, len(row))

    def extend(self, rows: Iterable[Sequence[str]]) -> None:
        for row in rows:
            self.append(row)

    def seal(self) -> None:
        """Finish writing; the store becomes a read-only sequence. Idempotent."""
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        self._offsets = np.array(self._growing, dtype=np.int64)
        self._growing = None

    # -- reading ---------------------------------------------------------------------
    @property
    def n_columns(self) -> int:
        """The fewest columns of any row (0 when empty)."""
        return self._n_columns or 0

    def __len__(self) -> int:
        if self._growing is not None:
            return len(self._growing) - 1
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> tuple[str, ...]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, ...]]: ...

    def __getitem__(self, index: int | slice) -> tuple[str, ...] | list[tuple[str, ...]]:
        self._check_readable()
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1:
                return self._read_range(start, stop)
            return [self[i] for i in range(start, stop, step)]
        i = operator.index(index)       # ints and NumPy integers; no floats
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {index} out of range for {n} rows")
        lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
        return _decode(_pread(self._fd, hi - lo - 1, lo))

    def _read_range(self, start: int, stop: int) -> list[tuple[str, ...]]:
        if start >= stop:
            return []
        offs = self._offsets[start:stop + 1]
        base = int(offs[0])
        buf = _pread(self._fd, int(offs[-1]) - base, base)
        ends = (offs - base).tolist()
        return [_decode(buf[ends[k]:ends[k + 1] - 1]) for k in range(len(ends) - 1)]

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        for start in range(0, len(self), _ITER_BLOCK):
            yield from self._read_range(start, min(start + _ITER_BLOCK, len(self)))

    def _check_readable(self) -> None:
        if self._writer is not None:
            raise RuntimeError("RowStore is still being written; call seal() first")
        if not self._finalizer.alive:
            raise ValueError("RowStore is closed")

    def close(self) -> None:
        """Release the file now (deleted if this process created it)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._finalizer()

    def __repr__(self) -> str:
        return f"RowStore({len(self)} rows, {self.path!r})"

    # -- pickling (spawned DDP workers) ----------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        self._check_readable()
        return {"path": self.path, "offsets": self._offsets, "n_columns": self._n_columns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self._offsets, self._n_columns = state["path"], state["offsets"], state["n_columns"]
        self._writer, self._growing = None, None
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: the row store's file is gone; the process that "
                                    "built the dataset must outlive its copies") from None
        # owner_pid=None: this copy closes its descriptor but leaves the file to its owner
        self._finalizer = weakref.finalize(self, _cleanup, self._fd, self.path, None)
