"""The on-disk state of an index: SQLite catalog plus immutable memory-mapped vector segments.

Layout of an index directory::

    manifest.json          model, dimension, normalization, similarity, kind (written once)
    catalog.sqlite         docs(row, id, text, metadata, deleted), passages(row, doc, start, stop),
                           lexical (FTS5 over the passages; lexical.py), segments, state (generation,
                           documents, next_id, ann_file, crc:FILE checksums; integrity.py)
    vectors/seg-000001.f32 raw float32 rows; never modified once committed
    vectors/seg-000001.i8  their int8 copy for fast exact search (cosine and dot; int8_scan.py)
    vectors/seg-000001.bf16 or a bfloat16 one (older indexes, CPUs where only bf16 pays; prefilter.py)
    ann-000003.faiss       the ANN structure of the committed state (hnsw / ivfpq only)

A vector row is a passage: a span of a document's text (the whole text unless the index
chunks long documents). A document's row number is the row of its first passage. Indexes made
before passages existed have no passages table: there every document is one row, its own.

What is committed is exactly what the catalog says: a segment file or ANN file counts only
once a SQLite transaction names it. A writer killed half-way leaves files that no transaction
names; readers never look at them and the next writer removes them. Readers need no lock: a
reader reads the catalog inside one read transaction (`Catalog.read`: SQLite in WAL mode keeps
its snapshot whatever commits meanwhile) and holds the files that snapshot names open, so a
compaction that removes them later cannot pull them away (view.py). Committed files never change;
only a copy a segment lacks (or holds damaged) is written for it later, renamed into place whole.
"""
from __future__ import annotations

import functools

import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..io import atomic_write

from . import lexical
from .filters import compile_where
from .rows import check_size

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs(
    row INTEGER PRIMARY KEY,
    id TEXT UNIQUE,
    text TEXT,
    metadata TEXT,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS segments(
    seg INTEGER PRIMARY KEY,
    file TEXT NOT NULL,
    first_row INTEGER NOT NULL,
    n_rows INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value TEXT);
CREATE INDEX IF NOT EXISTS docs_deleted ON docs(row) WHERE deleted = 1;
"""
PASSAGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS passages(
    row INTEGER PRIMARY KEY,
    doc INTEGER NOT NULL,
    start INTEGER NOT NULL,
    stop INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_doc ON passages(doc);
"""


BUMP_GENERATION = (
    "INSERT INTO state(key, value) VALUES ('generation', '1') "
    "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a whole file so that readers see the old or the new content, never a part."""
    with atomic_write(path) as f:
        f.write(data)


@dataclass(frozen=True)
class Segment:
    seg: int
    file: str
    first_row: int
    n_rows: int


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of the committed state."""

    segments: tuple[Segment, ...]
    n_rows: int
    deleted: np.ndarray  # bool per row
    state: dict[str, str]
    documents: int  # live documents

    @property
    def n_alive(self) -> int:
        return self.documents

    @functools.cached_property
    def live_rows(self) -> int:
        """Vector rows (passages) of the live documents."""
        return self.n_rows - int(self.deleted.sum())


class Catalog:
    """SQLite access for one index directory (one connection per Catalog, per thread)."""

    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = path
        if not create and not path.exists():
            raise FileNotFoundError(f"no index catalog at {path}")
        # timeout: a reader waits for a writer's short commit instead of failing.
        self.db = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
        if create:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA + PASSAGES_SCHEMA + lexical.SCHEMA + ";")
        self.db.execute("PRAGMA synchronous=FULL")
        # Deleted content is overwritten with zeros, not left in free pages (issue 21: a
        # deleted document must be gone from disk once checkpointed).
        self.db.execute("PRAGMA secure_delete=ON")
        self._tables()

    def _tables(self) -> None:
        names = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
        self.passages = "passages" in names  # rows are passages of documents (else: rows are documents)
        self.lexical = "lexical" in names

    def close(self) -> None:
        self.db.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and empty it, so deleted content leaves the
        WAL too; waits (the busy timeout) for readers of older states to finish. What is
        committed stays committed if it cannot: the next checkpoint empties the WAL then."""
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError:
            pass

    @contextmanager
    def read(self) -> Iterator[None]:
        """One read transaction: every query inside sees the same committed state, whatever
        other processes commit meanwhile. Nested uses join the outer one."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    def snapshot(self, cached: Snapshot | None = None) -> Snapshot:
        """The committed state; `cached` is returned as is when nothing was committed since."""
        cur = self.db.cursor()
        with self.read():
            gen = cur.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()
            if cached is not None and gen is not None and cached.state.get("generation") == gen[0]:
                return cached
            segs = tuple(Segment(*r) for r in cur.execute(
                "SELECT seg, file, first_row, n_rows FROM segments ORDER BY first_row"))
            n_rows = segs[-1].first_row + segs[-1].n_rows if segs else 0
            deleted = np.zeros(n_rows, dtype=bool)
            dead = ("SELECT p.row FROM docs d JOIN passages p ON p.doc = d.row WHERE d.deleted = 1" if self.passages
                    else "SELECT row FROM docs WHERE deleted = 1")
            dead_rows = [r[0] for r in cur.execute(dead)]
            if dead_rows:
                deleted[np.asarray(dead_rows, dtype=np.int64)] = True
            state = dict(cur.execute("SELECT key, value FROM state"))
        documents = int(state.get("documents", 0)) if self.passages else n_rows - int(deleted.sum())
        return Snapshot(segs, n_rows, deleted, state, documents)

    def existing_ids(self, ids: list[str]) -> list[str]:
        found: list[str] = []
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = f"SELECT id FROM docs WHERE id IN ({','.join('?' * len(part))})"
            found += [r[0] for r in self.db.execute(q, part)]
        return found

    def automatic_ids(self, start: int, sizes: list[int]) -> tuple[list[str], int]:
        """Ids for documents of `sizes` rows, counting up from `start` (a fresh index: the row
        numbers) past any explicit numeric id already taken; and where the next add starts."""
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        while True:
            ids = [str(start + o) for o in offsets]
            taken = self.existing_ids(ids)
            if not taken:
                return ids, start + int(sum(sizes))
            start = max(int(t) for t in taken) + 1

    def commit_add(
        self, segment: Segment, ids: list[str], texts: list[str], metadata: list[str | None],
        state: dict[str, str], spans: list[list[tuple[int, int]]] | None = None,
    ) -> None:
        """One transaction: the documents, their passages, the lexical rows, their segment and
        the new ANN file become visible together.

        `spans` holds each document's passages (one row each, in order); None: one row each.
        """
        spans = spans if spans is not None else [[(0, len(t))] for t in texts]
        firsts = segment.first_row + np.concatenate([[0], np.cumsum([len(s) for s in spans])[:-1]]).astype(int)
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany("INSERT INTO docs(row, id, text, metadata) VALUES (?, ?, ?, ?)",
                            zip(firsts.tolist(), ids, texts, metadata))
            rows = [(int(f) + k, int(f), a, b) for f, doc in zip(firsts, spans) for k, (a, b) in enumerate(doc)]
            if self.passages:
                cur.executemany("INSERT INTO passages(row, doc, start, stop) VALUES (?, ?, ?, ?)", rows)
                cur.execute("INSERT INTO state(key, value) VALUES ('documents', ?) ON CONFLICT(key) "
                            "DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value", (len(ids),))
            if self.lexical:
                lexical.insert(cur, [r[0] for r in rows], [t[a:b] for t, doc in zip(texts, spans) for a, b in doc])
            cur.execute("INSERT INTO segments(seg, file, first_row, n_rows) VALUES (?, ?, ?, ?)",
                        (segment.seg, segment.file, segment.first_row, segment.n_rows))
            cur.executemany("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", state.items())
            cur.execute(BUMP_GENERATION)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def commit_segments(self, old: tuple[Segment, ...], new: Segment, state: dict[str, str] | None = None,
                        drop: list[str] = ()) -> None:
        """Replace segments `old` by `new` (their rows concatenated) in one transaction, with
        `state` keys set and `drop` keys removed."""
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany("DELETE FROM segments WHERE seg = ?", ((s.seg,) for s in old))
            cur.executemany("DELETE FROM state WHERE key = ?", ((k,) for k in drop))
            cur.executemany("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", (state or {}).items())
            cur.execute("INSERT INTO segments(seg, file, first_row, n_rows) VALUES (?, ?, ?, ?)",
                        (new.seg, new.file, new.first_row, new.n_rows))
            cur.execute(BUMP_GENERATION)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def commit_delete(self, ids: list[str]) -> list[str]:
        """Tombstone `ids` in one transaction; returns the ids that were not found (then nothing changes)."""
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            rows = []
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                rows += cur.execute(
                    f"SELECT id, row FROM docs WHERE id IN ({','.join('?' * len(part))})", part).fetchall()
            missing = sorted(set(ids) - {r[0] for r in rows})
            if missing:
                cur.execute("ROLLBACK")
                return missing
            if self.lexical:
                lexical.delete_documents(cur, [r[1] for r in rows], self.passages)
            if self.passages:
                cur.execute("UPDATE state SET value = CAST(value AS INTEGER) - ? WHERE key = 'documents'", (len(rows),))
            # The id is released so it can be added again; the vector rows stay as tombstones.
            cur.executemany("UPDATE docs SET deleted = 1, id = NULL, text = NULL, metadata = NULL WHERE row = ?",
                            ((r[1],) for r in rows))
            cur.execute(BUMP_GENERATION)
            cur.execute("COMMIT")
            return []
        except BaseException:
            if self.db.in_transaction:
                cur.execute("ROLLBACK")
            raise

    def fetch(self, rows: Iterable[int]) -> dict[int, tuple[str, str | None, Any, int, int]]:
        """row -> (id, text, metadata, start, stop) for the live rows among `rows`;
        text[start:stop] is the row's passage."""
        rows = [int(r) for r in rows]
        out: dict[int, tuple[str, str | None, Any, int, int]] = {}
        for i in range(0, len(rows), 500):
            part = rows[i : i + 500]
            marks = ",".join("?" * len(part))
            q = (f"SELECT p.row, d.id, d.text, d.metadata, p.start, p.stop FROM passages p JOIN docs d ON d.row = p.doc "
                 f"WHERE d.deleted = 0 AND p.row IN ({marks})" if self.passages else
                 f"SELECT row, id, text, metadata, 0, length(text) FROM docs WHERE deleted = 0 AND row IN ({marks})")
            for row, id_, text, meta, start, stop in self.db.execute(q, part):
                stop = len(text) if not self.passages and text is not None else stop
                out[row] = (id_, text, json.loads(meta) if meta is not None else None, start, stop)
        return out

    def parents(self, rows: Iterable[int]) -> dict[int, int]:
        """row -> the row of the document it is a passage of."""
        rows = [int(r) for r in rows]
        if not self.passages:
            return {r: r for r in rows}
        out: dict[int, int] = {}
        for i in range(0, len(rows), 500):
            part = rows[i : i + 500]
            out.update(self.db.execute(f"SELECT row, doc FROM passages WHERE row IN ({','.join('?' * len(part))})", part))
        return out

    def rows_where(self, where: dict[str, Any]) -> np.ndarray:
        """Rows of the live documents whose metadata match `where` (see `compile_where`)."""
        sql, params = compile_where(where)
        q = (f"SELECT p.row FROM docs d JOIN passages p ON p.doc = d.row WHERE d.deleted = 0 AND {sql}"
             if self.passages else f"SELECT row FROM docs WHERE deleted = 0 AND {sql}")
        return np.asarray([r[0] for r in self.db.execute(q, params)], dtype=np.int64)

    def search_lexical(self, expression: str, k: int, where: dict[str, Any] | None,
                       passages: int | None = None, documents: int | None = None) -> list[tuple[int, float]]:
        """The `k` best documents for an FTS5 expression: (best passage row, BM25 score);
        `passages`, `documents`: the live passages and documents (lexical.search)."""
        if not self.lexical:
            raise ValueError(f"the index at {self.path.parent} has no lexical table (it predates it): "
                             f"build it with `sentembed index upgrade {self.path.parent}`, or search with mode='dense'")
        return lexical.search(self.db, expression, k, compile_where(where) if where else None, self.passages,
                              passages, documents)


def open_segment(directory: Path, seg: Segment, dim: int) -> np.ndarray:
    """Memory-map one committed segment read-only."""
    path = directory / seg.file
    check_size(path, seg.n_rows, dim)
    if seg.n_rows == 0:  # an empty file cannot be mapped
        return np.zeros((0, dim), np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(seg.n_rows, dim))


def disk_size(directory: Path) -> int:
    """Bytes of the files under `directory`; a file removed meanwhile by another process's commit counts 0."""
    total = 0
    for path in Path(directory).rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:
            pass
    return total
