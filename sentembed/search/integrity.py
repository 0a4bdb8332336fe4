"""Checksums of an index's vector files: damage is found and named, never searched silently.

Each segment file and its bf16 copy get a CRC-32 when written; the transaction that names the
file stores it in the catalog's state (key "crc:" + file). A reader checks a file when it first
opens it (view.py): a damaged segment refuses the search with the file named (`IndexDamaged`);
a damaged bf16 copy is set aside with a warning and the search scans the fp32 rows, with the
same results. `verify` checks every file of a committed state (`sentembed index verify`).
Indexes written before checksums existed carry none: their files are checked for size only.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import BinaryIO

from .store import Snapshot

CHUNK = 1 << 22


class IndexDamaged(RuntimeError):
    """A committed file of the index does not hold what its commit wrote."""


def key(file: str) -> str:
    return f"crc:{file}"


def checksum(file: Path | BinaryIO) -> str:
    """CRC-32 of a whole file (a path, or a file held open), as 8 hex digits."""
    if isinstance(file, Path):
        with open(file, "rb", buffering=0) as f:
            return checksum(f)
    crc, pos = 0, 0
    while True:
        data = _pread(file, pos)
        if not data:
            return f"{crc:08x}"
        crc = zlib.crc32(data, crc)
        pos += len(data)


def _pread(file: BinaryIO, pos: int) -> bytes:
    return os.pread(file.fileno(), CHUNK, pos)


def check(file: Path | BinaryIO, name: Path, expected: str | None) -> str | None:
    """None when `file` matches `expected` (or nothing is expected), else what is wrong."""
    if expected is None:
        return None
    got = checksum(file)
    if got != expected:
        return f"{name} is damaged: its checksum is {got}, the commit that wrote it recorded {expected}"
    return None


def verify(directory: Path, snap: Snapshot, dimension: int, shadows: bool) -> list[str]:
    """Every problem with the files of `snap` (empty: all intact). `shadows`: the index keeps
    bf16 copies (cosine and dot)."""
    from .view import shadow_file

    problems = []
    for seg in snap.segments:
        files = [(seg.file, seg)] + ([(shadow_file(seg.file), None)] if shadows else [])
        for name, segment in files:
            path = directory / name
            if not path.is_file():
                problems.append(f"{path} is missing")
                continue
            size = path.stat().st_size
            if segment is not None and size != segment.n_rows * dimension * 4:
                problems.append(f"{path} has {size} bytes, the catalog expects {segment.n_rows * dimension * 4}")
                continue
            problem = check(path, path, snap.state.get(key(name)))
            if problem:
                problems.append(problem)
    ann = snap.state.get("ann_file")
    if ann and not (directory / ann).is_file():
        problems.append(f"{directory / ann} is missing")
    return problems

