"""Checksums of an index's vector files: damage is found and named, never searched silently.

Each segment file and its copy (int8 or bf16) get a CRC-32 when written; the transaction that
names the file stores it in the catalog's state (key "crc:" + file). A reader checks a file when
it first opens it (view.py): a damaged segment refuses the search with the file named
(`IndexDamaged`); a damaged copy is set aside with a warning and the search scans another copy
or the fp32 rows, with the same results (`compact()` writes it again). `verify` checks every
file of a committed state (`sentembed index verify`). Indexes written before checksums existed
carry none: their segments are checked for size only.
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
    fast copies (cosine and dot); each one there, or named by the state's checksums, is checked."""
    from .view import copy_files

    problems = []
    for seg in snap.segments:
        for name in [seg.file] + (copy_files(seg.file) if shadows else []):
            path, expected = directory / name, snap.state.get(key(name))
            if not path.is_file():
                if name == seg.file or expected is not None:
                    problems.append(f"{path} is missing")
                continue
            size = path.stat().st_size
            if name == seg.file and size != seg.n_rows * dimension * 4:
                problems.append(f"{path} has {size} bytes, the catalog expects {seg.n_rows * dimension * 4}")
                continue
            problem = check(path, path, expected)
            if problem:
                problems.append(problem)
    ann = snap.state.get("ann_file")
    if ann and not (directory / ann).is_file():
        problems.append(f"{directory / ann} is missing")
    return problems
