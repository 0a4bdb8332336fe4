"""Writing vector segments, merging them, and compaction that drops deleted rows.

Each add writes one segment file. After each add, `merge_plan` picks the trailing segments to
merge so that every segment holds more rows than all later ones together: an index of n rows
then has at most log2(n) + 1 segments, and a row is rewritten O(log n) times over its life.
A merge keeps row numbers, so the ANN structure stays valid.

`rewrite` is the full compaction (`Index.compact`): one segment holding only the live rows,
renumbered, with the catalog's rows, the lexical table (rebuilt, so no trace of deleted
passages stays in its segments) and the ANN structure following, in one transaction. The
writer then checkpoints the WAL and the old files go: with SQLite's secure_delete, nothing of a
deleted document stays under the index directory.

Readers holding the old files keep reading them until they next look at the catalog (view.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..io import atomic_write, fsync_dir
from ..model.cpu import cpu
from . import ann, int8_scan, integrity, lexical
from .int8_scan import write_int8
from .prefilter import write_shadow
from .rows import read_blocks
from .store import BUMP_GENERATION, Catalog, Segment, Snapshot, open_segment
from .view import OpenFiles, SegmentFile, View, int8_file, segment_files, shadow_file

# Rewrite (dropping deleted rows) on add once more than this share of the rows is deleted.
REWRITE_DELETED_SHARE = 0.5
WRITE_BLOCK = 65536  # fp32 rows written at once (192 MiB at 768 dimensions)


def copies_to_write() -> list[tuple[Callable[[str], str], Callable]]:
    """(file name of, writer) of the copy each segment gets: the int8 one (a search through it
    holds a quarter of the fp32 bytes against bf16's half, at about bf16's speed where both are
    native; int8_scan.py), also on a CPU that scans neither, so that an index built there is
    ready for one that does; bf16 only on a CPU with native bf16 and no int8 dot products. Chosen by what the CPU has, not by a timing, so a busy
    machine writes the same files as a quiet one."""
    return [(shadow_file, write_shadow)] if cpu().bf16 and not cpu().vnni else [(int8_file, write_int8)]


def write_segment(directory: Path, seg: Segment, matrices: Iterable[np.ndarray], shadow: bool) -> dict[str, str]:
    """Write float32 rows (and, with `shadow`, their fast copy: `copies_to_write`) to new files,
    fsynced before any commit names them; returns their checksums, as the catalog's state keys
    (integrity.py).

    `matrices` is read once, WRITE_BLOCK rows at a time, so a memory map (a merge's segments,
    or vectors larger than memory given to `Index.add`) is never held whole; the copies are
    written from the segment file just written, read a block at a time. An error raised while
    reading them leaves no file behind."""
    path = directory / seg.file
    dim = None
    with atomic_write(path) as f:
        for m in matrices:
            dim = m.shape[1]
            for start in range(0, len(m), WRITE_BLOCK):
                f.write(np.ascontiguousarray(m[start : start + WRITE_BLOCK], dtype=np.float32).tobytes())
    names = [seg.file]
    if shadow and dim is not None:
        for name_of, write in copies_to_write():
            write(directory / name_of(seg.file), read_blocks(directory / seg.file, seg.n_rows, dim, WRITE_BLOCK))
            names.append(name_of(seg.file))
    fsync_dir(path.parent)
    return {integrity.key(name): integrity.checksum(directory / name) for name in names}


def write_missing_copies(directory: Path, catalog: Catalog, snap: Snapshot, seg: Segment, dim: int) -> None:
    """Give a committed segment the fast copy it lacks (or holds damaged, or outdated), in one commit: what
    `compact()` does for an index of one segment, which it has nothing else to rewrite for. The
    copy is renamed into place whole, so a reader sees it complete or not at all; it is written
    from the segment read a block at a time."""
    sums = {}
    for name_of, write in copies_to_write():
        name = name_of(seg.file)
        path = directory / name
        if path.is_file() and not integrity.check(path, path, snap.state.get(integrity.key(name))) and not (
                name == int8_file(seg.file) and int8_scan.outdated(path, seg.n_rows, dim)):
            continue
        write(path, read_blocks(directory / seg.file, seg.n_rows, dim, WRITE_BLOCK))
        sums[integrity.key(name)] = integrity.checksum(path)
    if sums:
        fsync_dir(directory / "vectors")
        catalog.commit_segments((seg,), seg, sums)


def write_ann(directory: Path, kind: str, similarity: str, params: ann.AnnParams, view: View | None,
              vecs: np.ndarray, seg_no: int) -> dict[str, str]:
    """Write the ANN structure of `view`'s state plus rows `vecs` (no view: of `vecs` alone) to
    a new file; returns its state keys (none for an exact index, or IVF-PQ still untrained)."""
    n_old = view.snap.n_rows if view is not None else 0
    index = ann.updated(kind, view and view.ann(), vecs, n_old, vecs.shape[1], similarity, params,
                        lambda: view.gather(np.arange(n_old)))
    if index is None:
        return {}
    name = f"ann-{seg_no:06d}.faiss"
    ann.save(index, directory / name)
    fsync_dir(directory)
    return {"ann_file": name, "ann_rows": str(n_old + len(vecs))}


def next_segment(snap: Snapshot, first_row: int, n_rows: int) -> Segment:
    seg_no = max((s.seg for s in snap.segments), default=0) + 1
    return Segment(seg_no, f"vectors/seg-{seg_no:06d}.f32", first_row, n_rows)


def merge_plan(segments: tuple[Segment, ...]) -> int:
    """How many trailing segments to merge now (0: none): the longest run at the end in which
    each segment holds no more rows than the ones after it together.

    >>> merge_plan(tuple(Segment(i, "", 0, n) for i, n in enumerate([8, 3, 1, 1])))
    4
    >>> merge_plan(tuple(Segment(i, "", 0, n) for i, n in enumerate([8, 3, 1])))
    0
    """
    count, after = 1, segments[-1].n_rows if segments else 0
    while count < len(segments) and segments[-count - 1].n_rows <= after:
        after += segments[-count - 1].n_rows
        count += 1
    return count if count > 1 else 0


def rewrite_due(snap: Snapshot) -> bool:
    return snap.n_rows > 0 and snap.deleted.sum() > REWRITE_DELETED_SHARE * snap.n_rows


def merge(directory: Path, files: OpenFiles, catalog: Catalog, snap: Snapshot, count: int, shadow: bool) -> int:
    """Merge the last `count` segments of `snap` into one (the caller holds the writer lock);
    `count` 1 (`compact()` of an index of one segment): write the copy it lacks, if any."""
    old = snap.segments[len(snap.segments) - count:]
    if len(old) < 2:
        if old and shadow:
            files.hold(snap)  # the segment is checked against its checksum before a copy is made of it
            write_missing_copies(directory, catalog, snap, old[0], files.dimension)
        return len(old)
    files.hold(snap)  # as above, for each merged segment
    merged = next_segment(snap, old[0].first_row, sum(s.n_rows for s in old))
    blocks = (block for s in old for block in read_blocks(directory / s.file, s.n_rows, files.dimension, WRITE_BLOCK))
    sums = write_segment(directory, merged, blocks, shadow)
    catalog.commit_segments(old, merged, sums, [integrity.key(n) for s in old for n in segment_files(s.file)])
    _remove(directory, old)
    return len(old)


def rewrite(directory: Path, files: OpenFiles, catalog: Catalog, snap: Snapshot, shadow: bool,
            build_ann: Callable[[np.ndarray, int], dict[str, str]]) -> int:
    """Replace every segment by one of the live rows, renumbered from 0, and the catalog with
    it (the caller holds the writer lock). `build_ann(vectors, seg_no)` writes the ANN structure
    of those rows and returns its state keys. Returns the number of segments replaced."""
    held, _ = files.hold(snap)
    keep = ~snap.deleted
    n_live = int(keep.sum())
    seg = next_segment(snap, 0, n_live)
    sums = write_segment(directory, seg, _live_blocks(directory, held, keep, files.dimension), shadow)
    state = sums | build_ann(open_segment(directory, seg, files.dimension), seg.seg)
    new_of = np.cumsum(keep) - 1  # old row -> new row, for the rows kept
    _commit_rewrite(catalog, snap, seg, np.flatnonzero(keep), new_of[keep], state)
    old_ann = snap.state.get("ann_file")
    if old_ann and state.get("ann_file") != old_ann:
        (directory / old_ann).unlink(missing_ok=True)
    _remove(directory, snap.segments)
    catalog.checkpoint()
    return len(snap.segments)


def _live_blocks(directory: Path, held: list[SegmentFile], keep: np.ndarray, dim: int) -> Iterator[np.ndarray]:
    """The rows of `held` segments that `keep` marks, in order, a block at a time (rows.read_blocks)."""
    for h in held:
        first = h.segment.first_row
        for block in read_blocks(directory / h.segment.file, h.segment.n_rows, dim, WRITE_BLOCK):
            yield block[keep[first : first + len(block)]]
            first += len(block)
    yield np.zeros((0, dim), np.float32)  # no live rows at all: still a (0, dim) segment


def _commit_rewrite(catalog: Catalog, snap: Snapshot, seg: Segment, old_rows: np.ndarray, new_rows: np.ndarray,
                    state: dict[str, str]) -> None:
    cur = catalog.db.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        # Automatic ids keep counting from where they were, not from the new row numbers.
        cur.execute("INSERT INTO state(key, value) VALUES ('next_id', ?) ON CONFLICT(key) DO NOTHING", (str(snap.n_rows),))
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS remap(old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
        cur.execute("DELETE FROM remap")
        cur.executemany("INSERT INTO remap(old, new) VALUES (?, ?)", zip(old_rows.tolist(), new_rows.tolist()))
        if catalog.passages:
            cur.execute("DELETE FROM passages WHERE doc IN (SELECT row FROM docs WHERE deleted = 1)")
        cur.execute("DELETE FROM docs WHERE deleted = 1")
        # Negative first, then back: no row number is ever held twice mid-way.
        renumber = "-1 - (SELECT new FROM remap WHERE old = {})"
        if catalog.passages:
            cur.execute(f"UPDATE passages SET row = {renumber.format('passages.row')}, doc = {renumber.format('passages.doc')}")
            cur.execute("UPDATE passages SET row = -1 - row, doc = -1 - doc")
        cur.execute(f"UPDATE docs SET row = {renumber.format('docs.row')}")
        cur.execute("UPDATE docs SET row = -1 - row")
        if catalog.lexical:
            _rebuild_lexical(cur, catalog.passages)
        cur.execute("DELETE FROM segments")
        cur.execute("INSERT INTO segments(seg, file, first_row, n_rows) VALUES (?, ?, ?, ?)",
                    (seg.seg, seg.file, seg.first_row, seg.n_rows))
        cur.execute("DELETE FROM state WHERE key IN ('ann_file', 'ann_rows') OR key LIKE 'crc:%'")
        cur.executemany("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", state.items())
        cur.execute(BUMP_GENERATION)
        cur.execute("COMMIT")
    except BaseException:
        if catalog.db.in_transaction:
            cur.execute("ROLLBACK")
        raise


def _rebuild_lexical(cur, chunked: bool, batch: int = 2000) -> None:
    """A fresh FTS5 table over the live passages: dropping the old one leaves none of its
    segments (which keep deleted terms until merged) behind."""
    cur.execute("DROP TABLE lexical")
    cur.execute(lexical.SCHEMA)
    q = ("SELECT p.row, d.text, p.start, p.stop FROM passages p JOIN docs d ON d.row = p.doc WHERE p.row > ? "
         "ORDER BY p.row LIMIT ?" if chunked else
         "SELECT row, text, 0, -1 FROM docs WHERE row > ? ORDER BY row LIMIT ?")
    last = -1
    while True:
        rows = cur.execute(q, (last, batch)).fetchall()
        if not rows:
            return
        lexical.insert(cur, [r for r, *_ in rows],
                       [(t or "")[a:b] if b >= 0 else (t or "") for _, t, a, b in rows])
        last = rows[-1][0]


def _remove(directory: Path, segments: tuple[Segment, ...]) -> None:
    for s in segments:
        for name in segment_files(s.file):  # the segment first: readers open its copy first (view.py)
            (directory / name).unlink(missing_ok=True)
