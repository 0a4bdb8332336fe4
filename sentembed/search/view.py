"""What a search reads: one committed state of the index and the files it names.

`OpenFiles` keeps an index's opened files across searches (the memory-mapped segments, their
bf16 copies, the ANN structure); a `View` is one snapshot of the catalog with those files.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from . import ann, prefilter
from .exact import Block
from .prefilter import Shadow, read_shadow
from .store import Catalog, Segment, Snapshot, open_segment, read_rows


def shadow_file(seg_file: str) -> str:
    """The bf16 copy's file beside a segment's."""
    return seg_file.rsplit(".", 1)[0] + ".bf16"


class OpenFiles:
    """An index's opened files, by name; committed files never change, so they stay valid."""

    def __init__(self, path: Path, dimension: int) -> None:
        self.path, self.dimension = path, dimension
        self._maps: dict[str, np.ndarray] = {}
        self._shadows: dict[str, Shadow | None] = {}
        self._ann: tuple[str, Any] | None = None

    def segment(self, seg: Segment) -> np.ndarray:
        m = self._maps.get(seg.file)
        if m is None:
            m = self._maps[seg.file] = open_segment(self.path, seg, self.dimension)
        return m

    def shadow(self, seg: Segment) -> Shadow | None:
        if not prefilter.bf16_scan_pays():  # this CPU scans fp32 faster: the copy is never read
            return None
        if seg.file not in self._shadows:
            self._shadows[seg.file] = read_shadow(self.path / shadow_file(seg.file), seg.n_rows, self.dimension)
        return self._shadows[seg.file]

    def ann(self, name: str) -> Any:
        if self._ann is None or self._ann[0] != name:
            self._ann = (name, ann.load(self.path / name))
        return self._ann[1]

    def forget(self, seg: Segment) -> None:
        self._maps.pop(seg.file, None)
        self._shadows.pop(seg.file, None)

    def clear(self) -> None:
        self._maps.clear()
        self._shadows.clear()
        self._ann = None


class View:
    """One committed state: its snapshot, the catalog to read it from, and its files."""

    def __init__(self, files: OpenFiles, catalog: Catalog, snap: Snapshot, similarity: str, kind: str,
                 params: ann.AnnParams) -> None:
        self.files, self.catalog, self.snap = files, catalog, snap
        self.similarity, self.kind, self.params = similarity, kind, params

    def blocks(self) -> list[Block]:
        path, dim = self.files.path, self.files.dimension
        return [Block(s.first_row, self.files.segment(s), self.files.shadow(s),
                      take=functools.partial(read_rows, path / s.file, dim))
                for s in self.snap.segments]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of global `rows`, wherever their segments are."""
        segs = self.snap.segments
        firsts = np.array([s.first_row for s in segs], dtype=np.int64)
        out = np.empty((len(rows), self.files.dimension), dtype=np.float32)
        which = np.searchsorted(firsts, rows, side="right") - 1
        for k in np.unique(which):
            sel = which == k
            seg = segs[k]
            out[sel] = read_rows(self.files.path / seg.file, self.files.dimension, rows[sel] - seg.first_row)
        return out

    def ann(self) -> Any:
        """The ANN structure of this state, or None."""
        name = self.snap.state.get("ann_file")
        return self.files.ann(name) if name else None
