"""What a search reads: one committed state of the index and the files it names, held open.

A reader takes a snapshot of the catalog inside a read transaction and opens every file the
snapshot names before it reads a row: open files (and memory maps) stay readable after
another process's compaction or add removes their names, so a reader never fails half-way.
A file already gone means a newer state was committed: the reader takes that one instead
(`Index._reading`).

`OpenFiles` keeps an index's open files across searches and closes those the latest
snapshot no longer names, so the disk space of removed files is given back.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from . import ann, int8_scan, integrity, prefilter
from .exact import Block
from .int8_scan import Int8Copy, read_int8
from .prefilter import Shadow, read_shadow
from .rows import row_reader
from .store import Catalog, Segment, Snapshot, open_segment


MAPPED_BYTES = 64 << 20


def shadow_file(seg_file: str) -> str:
    """The bf16 copy's file beside a segment's."""
    return seg_file.rsplit(".", 1)[0] + ".bf16"


def int8_file(seg_file: str) -> str:
    """The int8 copy's file beside a segment's."""
    return seg_file.rsplit(".", 1)[0] + ".i8"


def copy_files(seg_file: str) -> list[str]:
    """The files of a segment's copies, whichever it has: int8, bf16."""
    return [int8_file(seg_file), shadow_file(seg_file)]


def segment_files(seg_file: str) -> list[str]:
    """Every file a segment may have: its fp32 rows and its copies."""
    return [seg_file, *copy_files(seg_file)]


def scanned_copies() -> list[tuple[Any, Any]]:
    """(file name of, reader) of the copies this CPU scans faster than fp32, the faster first:
    int8 (its products are about twice as fast as bf16's where both are native), then bf16."""
    kinds = [(int8_file, read_int8)] if int8_scan.int8_scan_pays() else []
    return kinds + ([(shadow_file, read_shadow)] if prefilter.bf16_scan_pays() else [])


@dataclass
class SegmentFile:
    """One committed segment, open: its rows mapped, the file held with a reader of chosen rows
    (`read`: rows.row_reader, which keeps a large index's memory small), the copy that is
    scanned (int8 or bf16, or None: its fp32 rows)."""

    segment: Segment
    rows: np.ndarray
    file: BinaryIO
    read: Callable[[np.ndarray], np.ndarray]
    copy: Shadow | Int8Copy | None


class OpenFiles:
    """An index's open files, by name; committed files never change, so they stay valid."""

    def __init__(self, path: Path, dimension: int) -> None:
        self.path, self.dimension = path, dimension
        self._segments: dict[str, SegmentFile] = {}
        self._ann: tuple[str, Any] | None = None

    def hold(self, snap: Snapshot) -> tuple[list[SegmentFile], Any]:
        """The files of `snap` (segments in row order, the ANN structure or None), all open.

        Raises FileNotFoundError when one is gone: a later commit replaced it."""
        # A copy is opened before its segment: a compaction removes the segment first, so a
        # copy found means its segment was still there too, or the open below fails.
        held = [self._segments.get(s.file) or self._open(s, snap.state) for s in snap.segments]
        name = snap.state.get("ann_file")
        if name and (self._ann is None or self._ann[0] != name):
            self._ann = (name, ann.load(self.path / name))
        self._drop({s.file for s in snap.segments})
        return held, self._ann[1] if name and self._ann else None

    def _open(self, seg: Segment, state: dict[str, str]) -> SegmentFile:
        """Open a segment and, where this CPU scans one faster, its copy; each checked against
        the checksum its commit recorded (integrity.py), once, here."""
        copy = self._open_copy(seg, state)
        file = open(self.path / seg.file, "rb", buffering=0)
        try:
            problem = integrity.check(file, self.path / seg.file, state.get(integrity.key(seg.file)))
            if problem:
                raise integrity.IndexDamaged(f"{problem}: search refused. Restore the index from a copy or rebuild it "
                                             f"(sentembed index verify {self.path} lists every damaged file)")
            rows = open_segment(self.path, seg, self.dimension)
        except BaseException:
            file.close()
            raise
        read = row_reader(file, seg.n_rows, self.dimension)
        held = self._segments[seg.file] = SegmentFile(seg, rows, file, read, copy)
        return held

    def _open_copy(self, seg: Segment, state: dict[str, str]) -> Shadow | Int8Copy | None:
        """The fastest intact copy of `seg` this CPU scans; a damaged one is set aside with a warning."""
        for name_of, read in scanned_copies():
            name = name_of(seg.file)
            path = self.path / name
            if not path.is_file():
                continue
            problem = integrity.check(path, path, state.get(integrity.key(name)))
            if problem:
                warnings.warn(f"{problem}; searching without it (sentembed index verify {self.path})")
                continue
            copy = read(path, seg.n_rows, self.dimension)
            if copy is not None:
                return copy
        return None

    def _drop(self, keep: set[str]) -> None:
        for name in [n for n in self._segments if n not in keep]:
            self._segments.pop(name).file.close()

    def clear(self) -> None:
        self._drop(set())
        self._ann = None


class View:
    """One committed state: its snapshot, the catalog (inside the reader's transaction) and its
    files, open."""

    def __init__(self, files: OpenFiles, catalog: Catalog, snap: Snapshot, similarity: str, kind: str,
                 params: ann.AnnParams) -> None:
        self.catalog, self.snap = catalog, snap
        self.similarity, self.kind, self.params = similarity, kind, params
        self.dimension = files.dimension
        self.segments, self._ann = files.hold(snap)

    def blocks(self) -> list[Block]:
        # A large index reads the rows it re-scores through `read`, which lets their pages go;
        # one of at most MAPPED_BYTES of vectors through its memory maps, whose pages stay
        # mapped from one search to the next (a small index's pages are not worth saving, and
        # faulting them in again would cost each search).
        mapped = self.snap.n_rows * self.dimension * 4 <= MAPPED_BYTES
        return [Block(s.segment.first_row, s.rows, s.copy, take=None if mapped else s.read) for s in self.segments]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of global `rows`, wherever their segments are."""
        firsts = np.array([s.segment.first_row for s in self.segments], dtype=np.int64)
        out = np.empty((len(rows), self.dimension), dtype=np.float32)
        which = np.searchsorted(firsts, rows, side="right") - 1
        for k in np.unique(which):
            sel = which == k
            held = self.segments[k]
            out[sel] = held.read(rows[sel] - held.segment.first_row)
        return out

    def ann(self) -> Any:
        """The ANN structure of this state, or None."""
        return self._ann
