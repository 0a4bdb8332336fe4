"""Writing vector segments, and merging them: each add writes one segment file, merges keep
their number small.

A merge writes the rows of adjacent segments into one new file (and its bf16 copy), then one
transaction swaps the catalog over; row numbers stay, so the ANN structure stays valid. Readers
holding the old files keep reading them until they next look at the catalog.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .prefilter import write_shadow
from .store import Catalog, Segment, Snapshot, fsync_dir
from .view import OpenFiles, shadow_file


def write_segment(directory: Path, seg: Segment, matrices: list[np.ndarray], shadow: bool) -> None:
    """Write float32 rows (and, with `shadow`, their bf16 copy) to new files, fsynced before any
    commit names them."""
    path = directory / seg.file
    with open(path, "wb") as f:
        for m in matrices:
            f.write(np.ascontiguousarray(m, dtype=np.float32).tobytes())
        f.flush()
        os.fsync(f.fileno())
    if shadow:
        write_shadow(directory / shadow_file(seg.file), matrices)
    fsync_dir(path.parent)


def next_segment(snap: Snapshot, first_row: int, n_rows: int) -> Segment:
    seg_no = max((s.seg for s in snap.segments), default=0) + 1
    return Segment(seg_no, f"vectors/seg-{seg_no:06d}.f32", first_row, n_rows)


def merge(directory: Path, files: OpenFiles, catalog: Catalog, snap: Snapshot, shadow: bool) -> int:
    """Merge all segments of `snap` into one (the caller holds the writer lock); returns how many."""
    if len(snap.segments) < 2:
        return len(snap.segments)
    merged = next_segment(snap, 0, snap.n_rows)
    held, _ = files.hold(snap)
    write_segment(directory, merged, [h.rows for h in held], shadow)
    catalog.commit_segments(snap.segments, merged)
    for s in snap.segments:  # the segment first: readers open its bf16 copy first (view.py)
        (directory / s.file).unlink(missing_ok=True)
        (directory / shadow_file(s.file)).unlink(missing_ok=True)
    return len(snap.segments)
