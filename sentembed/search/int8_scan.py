"""Exact top-k at int8 speed: an int8 copy of the vectors picks candidates, fp32 decides.

A row c (fp32, d dimensions) is kept as b = round(c / s_c) in int8, with an fp32 scale s_c
shared by each run of SCALE_GROUP rows, the largest max|c_i| / 127 among them, so |b_i| <= 127;
a query q is kept as a, s_q with its own scale. The dequantized vectors are q^ = s_q a and
c^ = s_c b. A shared scale costs rows a little precision (their bound below is about a third
wider) and saves multiplying every product by its row's scale (Int8Scores). The int8 products
run on VNNI or AMX at about four times the fp32 speed and read a quarter of the bytes; the
candidates they keep are re-scored in fp32.

Scores. I = a.b is summed in int32, exactly (|I| <= d 127^2 < 2^31 for d <= MAX_DIM). The scan
computes rho = fl(fl(I) s_c) in fp32 and r = rho s_q in float64, where it is exact (a product of
two fp32 numbers), so r = q^.c^ (1 + e1)(1 + e2), |e_i| <= u = 2^-24, and

    |r - q^.c^| <= rel |r|,   rel = g2 / (1 - g2),   g2 = 2u / (1 - 2u)

(plus 2^-149 s_q, should rho fall among fp32's subnormals).

The bound. Let f be the fp32 score of q and c that the search returns, in any summation order:
|f - q.c| <= gamma_d |q| |c| with gamma_d = d u / (1 - d u). And

    q^.c^ - q.c = (q^ - q).c^ + q.(c^ - c),   so   |q^.c^ - q.c| <= |q^ - q| |c^| + |q| |c^ - c|

by Cauchy-Schwarz. With |c| <= |c^| + |c^ - c|, e_q = |q^ - q|, n_c = |c^| and e_c = |c^ - c|:

    |r - f| <= D(q, c) + rel |r|,   D(q, c) = e_q n_c + |q| (e_c + gamma_d (n_c + e_c)).

The copy stores n_c and e_c per row (computed in float64, rounded up to fp32) and their largest
values; candidates.py keeps a row while r + D + rel |r| can still reach a lower bound of the
k-th best fp32 score, first with the largest D of any row (one threshold per query while
scanning), then with the row's own D. Per row rather than one bound per segment, because it
keeps fewer rows (about half as many on random unit vectors). On random unit 768-d vectors D is
about 0.02; rows whose rounding errors all point along the query reach 99.6% of it
(tests/search/test_search_int8.py).

Refining. Before the candidates left at the end are re-scored from the fp32 rows (read from
disk), each gets a tighter bound from its int8 codes and the fp32 query: t = fl(q.b) in fp32,
any summation order, then r' = t s_c in float64 (exact). |t - q.b| <= gamma_d |q| |b| (+ d 2^-150
for underflow), and s_c |b| = |c^|, so |r' - q.c^| <= gamma_d |q| n_c + d 2^-150 s_c, and

    |r' - f| <= |q| (e_c + gamma_d (2 n_c + e_c)) + d 2^-150 s_c

(d here counts the padding's zero columns). The query's own rounding (e_q n_c, about half of D)
no longer counts, and most of the candidates fall out before their fp32 rows are read.

Against the bf16 copy (prefilter.py), whose bound is about ten times tighter, the scan's
products are faster and its re-scoring longer; benchmarks/RESULTS.md has the figures.

The file, `seg-XXXXXX.i8`: the codes (n x d', d rounded up to a multiple of 8 with zero columns:
they change no product, and torch's CPU kernel misreads a single column), then s_c, n_c and e_c
(n fp32 each), then a trailer (magic, n, d, largest n_c, largest e_c).
"""
from __future__ import annotations

import functools
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..io import atomic_write
from ..model.cpu import cpu, per_cpu
from ..model.int8_matmul import Int8Matrix, amx_matmul
from . import prefilter
from .candidates import GROUP, at_or_above

FP32_ROUNDOFF = 2.0 ** -24


def gamma(n: int) -> float:
    """gamma_n = n u / (1 - n u): the relative error bound of n fp32 roundings in a row."""
    return n * FP32_ROUNDOFF / (1 - n * FP32_ROUNDOFF)


REL = gamma(2) / (1 - gamma(2))  # the two fp32 roundings of rho, relative to |r|
MAX_DIM = (2 ** 31 - 1) // 127 ** 2  # int32 sums stay exact
TRAILER = struct.Struct("<8sQQdd")  # magic, rows, dimension, largest |c^|, largest |c^ - c|
MAGIC = b"SEI8\x00\x00\x00\x01"
WRITE_ROWS = 2048  # rows quantized at once when writing a copy (in float64: 12 MB for 768-d)
SCALE_GROUP = GROUP  # rows sharing one scale in a corpus copy: Int8Scores' groups of columns
# Columns Int8Scores tests at once by their largest product, a passing run then gathered: 32 took
# 0.67 ms a step of 16,384 rows by 100 queries, whole groups of 128 1.05 (benchmarks/RESULTS.md).
TEST_ROWS = 32
REFINE_PAIRS = 1024  # candidates refined at once (Int8Scan.refine): 3 MB of fp32 codes, 3 of queries


def padded(dim: int) -> int:
    """Columns of the int8 codes: `dim` rounded up to a multiple of 8."""
    return -(-dim // 8) * 8


def quantize(x: np.ndarray, group: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of `x` as (codes int8 (n, padded(d)), scales fp32, |c^| and |c^ - c| float64).

    Each run of `group` rows shares the largest of their scales (the corpus copy: see
    Int8Scores). Any integer codes would do: the error is measured afterwards, in float64
    (where s_c b is exact). A row of zeros (or one too small for an fp32 scale) gets scale 1
    and codes 0 when alone, its error then its own norm; a non-finite row gets an infinite
    error and no say in its group's scale.

    >>> codes, scale, norm, err = quantize(np.array([[0.5, -1.0, 0.25]], np.float32))
    >>> codes[0, :3].tolist(), float(scale[0]) == 1 / 127
    ([64, -127, 32], True)
    """
    x = _tensor(np.asarray(x, dtype=np.float32))  # a memory map's rows are read, not written
    n, d = x.shape
    top = x.abs().amax(dim=1) if d else torch.zeros(n)
    if group > 1 and n:
        top = torch.nan_to_num(top, nan=0.0, posinf=0.0)
        top = torch.nn.functional.pad(top, (0, -n % group)).view(-1, group).amax(dim=1).repeat_interleave(group)[:n]
    scale = (top.double() / 127).float()
    scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, 1.0)
    codes = torch.nan_to_num((x / scale[:, None]).round_().clamp_(-127, 127), nan=0.0)
    deq = codes.double().mul_(scale.double()[:, None])
    norm = torch.linalg.vector_norm(deq, dim=1)
    err = torch.linalg.vector_norm(deq.sub_(x.double()), dim=1)
    err = torch.where(torch.isfinite(x).all(dim=1), err, math.inf)
    out = torch.zeros((n, padded(d)), dtype=torch.int8)
    out[:, :d] = codes
    return out.numpy(), scale.numpy(), norm.numpy(), err.numpy()


def _up32(x: np.ndarray) -> np.ndarray:
    """float64 values rounded up to float32."""
    y = x.astype(np.float32)
    return np.where(y.astype(np.float64) < x, np.nextafter(y, np.float32(np.inf)), y)


@dataclass(frozen=True)
class Int8Copy:
    """The int8 copy of a block of fp32 rows: codes, scales and the two norms of the bound."""

    codes: np.ndarray   # int8 (n, padded(d)), usually a read-only memory map
    scale: np.ndarray   # fp32 (n,): s_c
    norm: np.ndarray    # fp32 (n,): |c^|, rounded up
    err: np.ndarray     # fp32 (n,): |c^ - c|, rounded up
    max_norm: float
    max_err: float

    @classmethod
    def of(cls, vectors: np.ndarray) -> "Int8Copy":
        """The copy of rows held in memory (tests, small data)."""
        codes, scale, norm, err = quantize(np.asarray(vectors, dtype=np.float32), SCALE_GROUP)
        norm, err = _up32(norm), _up32(err)
        return cls(codes, scale, norm, err, float(norm.max(initial=0)), float(err.max(initial=0)))

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return _tensor(self.codes[start:stop])

    def fits(self, vectors: np.ndarray) -> bool:
        """Whether this is a copy of `vectors`' shape, in a dimension whose int32 sums stay exact."""
        return self.codes.shape == (len(vectors), padded(vectors.shape[1])) and self.codes.shape[1] <= MAX_DIM


def _tensor(a: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memory maps are fine here
        return torch.from_numpy(np.ascontiguousarray(a))


def write_int8(path: Path, matrices: Iterable[np.ndarray]) -> None:
    """Write the int8 copy of fp32 `matrices` (rows in order, at least one matrix) whole or not
    at all (a temporary file renamed into place, fsynced)."""
    dim, n, max_norm, max_err = None, 0, 0.0, 0.0
    per_row: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with atomic_write(path) as f:
        for block in _in_steps(matrices, WRITE_ROWS):
            dim = block.shape[1]
            codes, scale, norm, err = quantize(block, SCALE_GROUP)
            norm, err = _up32(norm), _up32(err)  # the largest are of these: no row exceeds them
            f.write(codes.tobytes())
            per_row.append((scale, norm, err))
            n += len(codes)
            max_norm, max_err = max(max_norm, norm.max(initial=0)), max(max_err, err.max(initial=0))
        if dim is None:
            raise ValueError("write_int8 needs at least one matrix (it may have no rows)")
        for column in range(3):
            f.write(b"".join(part[column].tobytes() for part in per_row))
        f.write(TRAILER.pack(MAGIC, n, dim, float(max_norm), float(max_err)))


def _in_steps(matrices: Iterable[np.ndarray], rows: int) -> Iterable[np.ndarray]:
    """The rows of `matrices` as fp32 blocks of `rows` (the last shorter, perhaps empty), whatever
    the matrices' own lengths: scale groups start at multiples of SCALE_GROUP."""
    held = None  # rows carried over to the next matrix, fewer than `rows`
    for matrix in matrices:
        start = 0
        if held is not None and len(held):
            start = rows - len(held)
            held = np.concatenate([held, np.asarray(matrix[:start], dtype=np.float32)])
            if len(held) < rows:
                continue
            yield held
        held = np.zeros((0, matrix.shape[1]), np.float32)
        stop = start + max(len(matrix) - start, 0) // rows * rows
        for step in range(start, stop, rows):
            yield np.asarray(matrix[step : step + rows], dtype=np.float32)
        if stop < len(matrix):
            held = np.asarray(matrix[stop:], dtype=np.float32)
    if held is not None:
        yield held


def read_int8(path: Path, n_rows: int, dim: int) -> Int8Copy | None:
    """Memory-map an int8 copy; None (the search goes on without it) when absent or damaged."""
    if not path.is_file():
        return None
    width = padded(dim)
    expected = n_rows * (width + 12) + TRAILER.size
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(size - TRAILER.size, 0))
        magic, n, d, max_norm, max_err = TRAILER.unpack(f.read(TRAILER.size).rjust(TRAILER.size, b"\0"))
    if size != expected or magic != MAGIC or (n, d) != (n_rows, dim) or not math.isfinite(max_norm):
        warnings.warn(f"{path} is damaged ({size} bytes, expected {expected} for {n_rows} rows of {dim}); "
                      "searching without it")
        return None
    if n_rows == 0:
        empty = np.zeros(0, np.float32)
        return Int8Copy(np.zeros((0, width), np.int8), empty, empty, empty, 0.0, 0.0)
    codes = np.memmap(path, dtype=np.int8, mode="r", shape=(n_rows, width))
    column = lambda i: np.memmap(path, dtype=np.float32, mode="r", shape=(n_rows,),  # noqa: E731
                                 offset=n_rows * width + 4 * n_rows * i)
    return Int8Copy(codes, column(0), column(1), column(2), max_norm, max_err)


def outdated(path: Path, n_rows: int, dim: int) -> bool:
    """Whether an intact int8 copy has a scale per row (as written before rows shared one): it
    is exact, and scans slower (`compact()` rewrites it)."""
    copy = read_int8(path, n_rows, dim)
    whole = n_rows // SCALE_GROUP * SCALE_GROUP
    if copy is None or not whole:
        return False
    scale = np.asarray(copy.scale[:whole]).reshape(-1, SCALE_GROUP)
    return not bool((scale == scale[:, :1]).all())


class Int8Scan:
    """One block of fp32 queries against int8 copies: the int8 queries, scores and the bound.

    `slack` (float64, per query) is the largest D(q, c) of any row of `copies`; `row_slack` the
    row's own; `rel` the relative part (see the module's docstring).
    """

    rel = REL

    def __init__(self, queries: torch.Tensor, copies: list[Int8Copy]) -> None:
        codes, scale, _, err = quantize(queries.numpy())
        self.a = torch.from_numpy(codes)
        self.queries = torch.nn.functional.pad(queries.float(), (0, codes.shape[1] - queries.shape[1]))
        # With AMX the queries are packed once and each block of rows multiplies them: the
        # products come out (rows, queries), which Int8Scores reads through a transposed view.
        self.packed = Int8Matrix(self.a) if amx_matmul() else None
        self.scale = torch.from_numpy(scale).double()
        self.q_err = torch.from_numpy(err)
        self.q_norm = torch.linalg.vector_norm(queries.double(), dim=1)
        self.gamma = gamma(queries.shape[1])
        n_max = max(c.max_norm for c in copies)
        e_max = max(c.max_err for c in copies)
        self.slack = self._slack(torch.arange(len(queries)), torch.tensor(n_max, dtype=torch.float64),
                                 torch.tensor(e_max, dtype=torch.float64))

    def _row_side(self, q: torch.Tensor, n: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """|q| (e_c + gamma_d (n_c + e_c)): the row's rounding and the fp32 score's own error."""
        return self.q_norm[q] * (e + self.gamma * (n + e))

    def _slack(self, q: torch.Tensor, n: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        d = self.q_err[q] * n + self._row_side(q, n, e)
        # Head-room for evaluating the bound in float64, and for a subnormal rho.
        return d * (1 + 1e-9) + 2.0 ** -148 * self.scale[q]

    def scores(self, copy: Int8Copy, start: int, stop: int) -> tuple["Int8Scores", torch.Tensor]:
        """(rho, s_q): fp32 scores of rows [start, stop) divided by each query's scale."""
        rows = copy.rows(start, stop)
        products = self.packed(rows).t() if self.packed is not None else torch._int_mm(self.a, rows.T)
        return Int8Scores(products, _tensor(copy.scale[start:stop])), self.scale

    def refine(self, copy: Int8Copy, q: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores r' (float64) of pairs (query q, row of `copy`) from the fp32 query and the
        row's codes, and their bound, |r' - f| <= the second (see "Refining" above)."""
        t = torch.empty(len(rows))
        # A dot product a pair, not a matrix product: each row is wanted by a query or two.
        for s in range(0, len(rows), REFINE_PAIRS):
            part = slice(s, s + REFINE_PAIRS)
            codes = _tensor(copy.codes[rows[part].numpy()]).float()
            t[part] = torch.bmm(codes.unsqueeze(1), self.queries[q[part]].unsqueeze(2)).view(-1)
        scale, n, e = (torch.from_numpy(np.asarray(c[rows.numpy()], dtype=np.float64))
                       for c in (copy.scale, copy.norm, copy.err))
        width = self.queries.shape[1]  # the padding's zero columns add nothing, yet count here
        bound = self._row_side(q, n, e) + gamma(width) * self.q_norm[q] * n + width * 2.0 ** -150 * scale
        return t.double() * scale, bound * (1 + 1e-9)

    def row_slack(self, copy: Int8Copy, start: int, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """D(q, c) of pairs (query q, row start + c)."""
        rows = (c + start).numpy()
        n = torch.from_numpy(np.asarray(copy.norm[rows], dtype=np.float64))
        e = torch.from_numpy(np.asarray(copy.err[rows], dtype=np.float64))
        return self._slack(q, n, e)


class Int8Scores:
    """The scores rho = fl(I s_c) of a chunk, kept as its products I and column scales s_c.

    I is int32, or fp32 converted once from int32 (model/int8_matmul.py), and may be the
    transposed view of a (rows, queries) block: the group maxima are then taken along its rows.

    Candidates.add reads it as it reads a tensor of scores (`shape`, `float()`, `[q, c]`,
    `masked_fill_` with -inf). Its `at_or_above` finds the scores above a positive floor F
    without multiplying every product: where a group of SCALE_GROUP columns shares one scale s
    (as the corpus copy's rows do), fl(I s) >= F > 0 needs I s (1 + u) >= F, so the largest I
    of each run of TEST_ROWS columns says whether the run holds any; only those are multiplied out.
    """

    def __init__(self, products: torch.Tensor, scale: torch.Tensor) -> None:
        self.products, self.scale, self.dead = products, scale, None
        self.shape = products.shape

    def float(self) -> torch.Tensor:
        rho = self.products * self.scale
        return rho.masked_fill_(self.dead, -math.inf) if self.dead is not None else rho

    def __getitem__(self, at: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q, c = at
        return self.products[q, c] * self.scale[c]  # the same fp32 product as float()'s

    def masked_fill_(self, dead: torch.Tensor, value: float) -> "Int8Scores":
        assert value == -math.inf, "excluded rows only"
        dead = dead.reshape(-1)
        self.dead = dead if self.dead is None else self.dead | dead
        return self

    def at_or_above(self, floor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query, column) of every rho >= its query's floor (float32); may return a few more."""
        n = self.shape[1]
        main = n - n % GROUP
        shared = self.scale[:main].view(-1, GROUP)
        top = shared.amax(dim=1)
        if main == 0 or not bool((floor > 0).all()) or not torch.equal(top, shared.amin(dim=1)):
            return at_or_above(self.float(), floor)  # scales vary within groups: multiply all
        # Runs of TEST_ROWS columns within a group are tested by their largest I: fl(I s) <=
        # I s (1 + u); the margin 2^-20 covers that u and the three fp32 roundings of the test
        # (I itself is exact in fp32 while |I| < 2^24, and rounded once beyond).
        runs = main // TEST_ROWS
        run_scale = top.repeat_interleave(GROUP // TEST_ROWS) * (1 + 2.0 ** -20)
        if self.products.stride(0) == 1:  # (rows, queries) storage: reduce over its contiguous rows
            by_run = self.products.t()[:main].view(runs, TEST_ROWS, -1)
            gr, gq = (by_run.amax(dim=1).float() * run_scale.unsqueeze(1) >= floor).nonzero(as_tuple=True)
            products = by_run[gr, :, gq]
        else:
            by_run = self.products[:, :main].view(-1, runs, TEST_ROWS)
            gq, gr = (by_run.amax(dim=2).float() * run_scale >= floor.unsqueeze(1)).nonzero(as_tuple=True)
            products = by_run[gq, gr]
        rho = products * self.scale[:main].view(runs, TEST_ROWS)[gr]
        r, j = (rho >= floor[gq].unsqueeze(1)).nonzero(as_tuple=True)
        q, c = gq[r], gr[r] * TEST_ROWS + j
        if main < n:
            tq, tc = (self.products[:, main:] * self.scale[main:] >= floor.unsqueeze(1)).nonzero(as_tuple=True)
            q, c = torch.cat([q, tq]), torch.cat([c, tc + main])
        if self.dead is not None:
            live = ~self.dead[c]
            q, c = q[live], c[live]
        return q, c


@functools.cache
def int8_products_exact() -> bool:
    """Whether `torch._int_mm` exists here and sums exactly (checked once, on a small case)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (3, 24), generator=gen, dtype=torch.int8)
    b = torch.randint(-127, 128, (37, 24), generator=gen, dtype=torch.int8)
    try:
        got = torch._int_mm(a, b.T)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(torch.equal(got.long(), a.long() @ b.long().T))


@per_cpu
def int8_scan_pays() -> bool:
    """Whether scanning the int8 copy beats scanning the fp32 rows on this CPU, measured once.

    With VNNI or AMX (model/cpu.py) the int8 products with their scaling run about four times
    as fast as fp32 and twice as fast as bf16 (AMD EPYC, AVX512_VNNI, 100 queries against
    16,384 rows, one thread: 7.6 ms against 30 ms and 14 ms); without them int8 is not scanned.
    """
    if not cpu().vnni or not int8_products_exact():
        return False
    gen = torch.Generator().manual_seed(0)
    queries, rows = torch.randn(64, 768, generator=gen), torch.randn(8192, 768, generator=gen)
    codes = torch.randint(-127, 128, (8192, 768), generator=gen, dtype=torch.int8).numpy()
    ones = np.ones(8192, np.float32)
    copy = Int8Copy(codes, ones, ones, ones, 1.0, 1.0)  # any codes: only the time counts
    scan = Int8Scan(queries, [copy])
    fp32, int8 = prefilter.best_times(lambda: queries @ rows.T, lambda: scan.scores(copy, 0, len(rows))[0].float())
    return int8 < 0.8 * fp32
