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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from .store import Snapshot

CHUNK = 1 << 22
# A file is summed in parts of at least this many bytes, one thread each (zlib lets go of the
# GIL while it sums), and the parts' CRCs are combined: reading sums about 2 GB/s a core.
PART = 1 << 26


class IndexDamaged(RuntimeError):
    """A committed file of the index does not hold what its commit wrote."""


def key(file: str) -> str:
    return f"crc:{file}"


def checksum(file: Path | BinaryIO) -> str:
    """CRC-32 of a whole file (a path, or a file held open), as 8 hex digits; large files are
    summed in parts, on every core this process may use."""
    if isinstance(file, Path):
        with open(file, "rb", buffering=0) as f:
            return checksum(f)
    size = os.fstat(file.fileno()).st_size
    parts = max(1, min(_cores(), size // PART))
    cuts = [size * i // parts for i in range(parts)] + [None]  # the last part runs to the end
    if parts == 1:
        return f"{_crc(file, 0, None)[0]:08x}"
    with ThreadPoolExecutor(parts) as pool:
        sums = list(pool.map(_crc, [file] * parts, cuts[:-1], cuts[1:]))
    crc = 0
    for part, length in sums:
        crc = crc32_combine(crc, part, length)
    return f"{crc:08x}"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _crc(file: BinaryIO, start: int, stop: int | None) -> tuple[int, int]:
    """(CRC-32, length) of the bytes [start, stop) of `file`, to its end when stop is None."""
    crc, pos = 0, start
    while stop is None or pos < stop:
        data = os.pread(file.fileno(), CHUNK if stop is None else min(CHUNK, stop - pos), pos)
        if not data:
            break
        crc = zlib.crc32(data, crc)
        pos += len(data)
    return crc, pos - start


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of A + B from crc1 = crc32(A), crc2 = crc32(B) and len(B): crc1 is carried
    through len(B) zero bytes by squaring the CRC's shift operator over GF(2) (a 32 x 32 bit
    matrix, one int per column), as zlib's crc32_combine does.

    >>> crc32_combine(zlib.crc32(b"ab"), zlib.crc32(b"cd"), 2) == zlib.crc32(b"abcd")
    True
    """
    if length2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    even = _square(odd)  # two zero bits
    odd = _square(even)  # four
    while True:
        even = _square(odd)  # first pass: one zero byte
        if length2 & 1:
            crc1 = _times(even, crc1)
        length2 >>= 1
        if not length2:
            break
        odd = _square(even)
        if length2 & 1:
            crc1 = _times(odd, crc1)
        length2 >>= 1
        if not length2:
            break
    return crc1 ^ crc2


def _times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _square(matrix: list[int]) -> list[int]:
    return [_times(matrix, column) for column in matrix]


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
