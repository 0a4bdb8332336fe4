"""Exact top-k at bf16 speed: a bfloat16 copy of the vectors picks candidates, fp32 decides.

For inner-product search (dot, and cosine over the index's stored unit vectors) a bf16 matrix
product runs about twice as fast as fp32 on this CPU and reads half the bytes. Its scores are
not exact, but their error has a proven bound, so the rows it keeps provably include the fp32
top k; only those rows are read again in fp32 and re-scored.

The bound, for a query q and a corpus row c (both fp32), a = bf16(q), b = bf16(c), d dimensions:

    |a.b - q.c| <= |a - q| |b| + |q| |b - c|       rounding the inputs (Cauchy-Schwarz)
    + gamma_d |a| |b|                             fp32 accumulation; bf16 products are exact in fp32
    + gamma_d |q| |c|                             the fp32 re-scoring itself
    + u |r|                                       when the product is rounded to bf16 (u = 2^-8)

with gamma_d = d 2^-24 / (1 - d 2^-24). Writing D for the sum of the first four lines (taken
with the corpus's largest |b - c| and |c|), the approximate score r and the exact one f obey
|r - f| <= D + u'|r|, u' = u / (1 - u) (0 when the product stays fp32). exact.py keeps the rows
that can still reach the k-th best exact score within that bound; int8_scan.py is the same idea
with an int8 copy, where each row has its own D.
"""
from __future__ import annotations

import functools
import math
import struct
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..io import atomic_write
from ..model.cpu import cpu, per_cpu

BF16_ROUNDOFF = 2.0 ** -8
FP32_ROUNDOFF = 2.0 ** -24
TRAILER = struct.Struct("<8sdd")  # magic, largest |c|, largest |bf16(c) - c|
MAGIC = b"SEBF16\x00\x01"
WRITE_ROWS = 8192  # rows converted at once when writing a shadow


@dataclass(frozen=True)
class Shadow:
    """The bf16 copy of a block of fp32 rows, with the two norms the error bound needs."""

    bits: np.ndarray  # uint16 (n, d): bf16 bit patterns, usually a read-only memory map
    max_norm: float   # largest |c| over the fp32 rows
    max_error: float  # largest |bf16(c) - c|

    def rows(self, start: int, stop: int) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memory maps are fine here
            return torch.from_numpy(np.ascontiguousarray(self.bits[start:stop])).view(torch.bfloat16)


def to_bf16(vectors: np.ndarray | torch.Tensor) -> tuple[np.ndarray, float, float]:
    """bf16 bit patterns of fp32 rows (round to nearest even), their largest norm and rounding error."""
    c = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    b = c.to(torch.bfloat16)
    c64 = c.double()
    norm = float(torch.linalg.vector_norm(c64, dim=1).max()) if len(c) else 0.0
    err = float(torch.linalg.vector_norm(b.double() - c64, dim=1).max()) if len(c) else 0.0
    return b.view(torch.int16).numpy().view(np.uint16), norm, err


def write_shadow(path: Path, matrices: Iterable[np.ndarray]) -> None:
    """Write the bf16 copy of fp32 `matrices` (rows in order), then a trailer with the bound's
    norms, whole or not at all (a temporary file renamed into place, fsynced)."""
    max_norm = max_error = 0.0
    with atomic_write(path) as f:
        for matrix in matrices:
            # A slice at a time: the norms are taken in float64, four times the fp32 bytes.
            for start in range(0, len(matrix), WRITE_ROWS):
                bits, norm, err = to_bf16(matrix[start : start + WRITE_ROWS])
                f.write(bits.tobytes())
                max_norm, max_error = max(max_norm, norm), max(max_error, err)
        f.write(TRAILER.pack(MAGIC, max_norm, max_error))


def read_shadow(path: Path, n_rows: int, dim: int) -> Shadow | None:
    """Memory-map a shadow file; None (exact fp32 search then) when it is absent or damaged."""
    if not path.is_file():
        return None
    body = n_rows * dim * 2
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(size - TRAILER.size, 0))
        trailer = f.read(TRAILER.size)
    if size != body + TRAILER.size or TRAILER.unpack(trailer)[0] != MAGIC:
        warnings.warn(f"{path} is damaged ({size} bytes, expected {body + TRAILER.size}); searching in fp32 instead")
        return None
    _, max_norm, max_error = TRAILER.unpack(trailer)
    if not (math.isfinite(max_norm) and math.isfinite(max_error)):
        return None
    bits = np.memmap(path, dtype=np.uint16, mode="r", shape=(n_rows, dim)) if n_rows else np.zeros((0, dim), np.uint16)
    return Shadow(bits, max_norm, max_error)


def bf16_scores(queries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`queries @ rows.T` for bf16 operands through oneDNN (fp32 accumulation)."""
    try:
        return torch.ops.mkldnn._linear_pointwise(queries, rows, None, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):
        return queries @ rows.T


@per_cpu
def bf16_scan_pays() -> bool:
    """Whether scanning the bf16 copy beats scanning the fp32 rows on this CPU, measured once.

    With native bf16 (AVX512_BF16, AMX) the bf16 product runs about twice as fast; without
    it bf16 is emulated and several times slower than fp32, so the index scans fp32 there."""
    if not cpu().bf16:
        return False
    gen = torch.Generator().manual_seed(0)
    queries, rows = torch.randn(64, 768, generator=gen), torch.randn(8192, 768, generator=gen)
    q16, r16 = queries.bfloat16(), rows.bfloat16()
    fp32, bf16 = best_times(lambda: queries @ rows.T, lambda: bf16_scores(q16, r16))
    return bf16 < 0.8 * fp32


def best_times(*runs: Callable[[], object], repeats: int = 5) -> list[float]:
    """The best time of each run, taken in turns: a busy spell on a shared machine slows all
    of them, not one."""
    for run in runs:
        run()  # warm-up: first calls build kernels
    best = [math.inf] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


@functools.cache
def _rounds_to_bf16() -> bool:
    a = torch.ones(1, 8, dtype=torch.bfloat16)
    return bf16_scores(a, a).dtype == torch.bfloat16


class Bf16Scan:
    """One block of fp32 queries against bf16 copies: the bf16 queries, their scores and the bound.

    `slack` (float64, per query) is D above, for every row alike; `rel` is u' (0 when the
    product stays fp32).
    """

    def __init__(self, queries: torch.Tensor, shadows: list[Shadow]) -> None:
        a = queries.to(torch.bfloat16)
        q64, a64 = queries.double(), a.double()
        q_norm = torch.linalg.vector_norm(q64, dim=1)
        a_norm = torch.linalg.vector_norm(a64, dim=1)
        q_err = torch.linalg.vector_norm(a64 - q64, dim=1)
        c_max = max(s.max_norm for s in shadows)
        e_max = max(s.max_error for s in shadows)
        b_max = c_max + e_max
        d = queries.shape[1]
        gamma = d * FP32_ROUNDOFF / (1 - d * FP32_ROUNDOFF)
        slack = q_err * b_max + q_norm * e_max + gamma * (a_norm * b_max + q_norm * c_max)
        # Head-room for evaluating the bound itself in float64.
        self.slack = slack * (1 + 1e-9) + 1e-30
        self.rel = BF16_ROUNDOFF / (1 - BF16_ROUNDOFF) if _rounds_to_bf16() else 0.0
        self.q16 = a

    def scores(self, shadow: Shadow, start: int, stop: int) -> tuple[torch.Tensor, None]:
        """Approximate scores of rows [start, stop) (no per-query scale: None)."""
        return bf16_scores(self.q16, shadow.rows(start, stop)), None

    def row_slack(self, shadow: Shadow, start: int, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.slack[q]
