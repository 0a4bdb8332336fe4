"""Exact top-k search: chunked matrix products with a running top-k, within a memory bound.

The corpus is read once, in chunks of rows; every chunk is scored against a chunk of queries
and only each query's best k survive. Extra memory is the score buffer
(query chunk x corpus chunk, about 64 MB at most) plus the running top-k, whatever the corpus
size, so a memory-mapped 1M x 768 matrix is searched without loading it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from . import prefilter
from .prefilter import Bound, Shadow, bf16_scores
from ..vectors import as_matrix, prepare_queries, resolve_similarity, score_chunk, topk

SCORE_BUFFER_FLOATS = 1 << 24  # 64 MB of scores at most per step
MAX_CORPUS_CHUNK = 65536
MIN_CORPUS_CHUNK = 4096


@dataclass(frozen=True)
class TopK:
    """Result of an exact search: row i holds query i's best `k` hits, best first.

    `scores` is float32 (n_queries, k) and `indices` int64 (n_queries, k), where
    k = min(top_k, number of searchable corpus rows).
    """

    scores: np.ndarray
    indices: np.ndarray

    def to_lists(self) -> list[list[dict]]:
        """The sentence-transformers shape: per query a list of {"corpus_id", "score"}."""
        return [
            [{"corpus_id": int(i), "score": float(s)} for s, i in zip(srow, irow)]
            for srow, irow in zip(self.scores, self.indices)
        ]


def _chunk_sizes(n_queries: int, query_chunk_size: int | None, corpus_chunk_size: int | None) -> tuple[int, int]:
    qc = query_chunk_size or min(max(n_queries, 1), 1024)
    cc = corpus_chunk_size or max(MIN_CORPUS_CHUNK, min(MAX_CORPUS_CHUNK, SCORE_BUFFER_FLOATS // qc))
    if qc <= 0 or cc <= 0:
        raise ValueError("chunk sizes must be positive")
    return qc, cc


MAX_CANDIDATES = 1 << 22  # (query, row) pairs kept for re-scoring before falling back to fp32


@dataclass(frozen=True)
class Block:
    """Corpus rows [first, first + len(vectors)); `shadow` is their bf16 copy, when there is one."""

    first: int
    vectors: Any
    shadow: Shadow | None = None
    take: Callable[[np.ndarray], np.ndarray] | None = None  # reads rows by block-local number


class _Candidates:
    """For each query of a chunk: the rows that may still be in its exact top k.

    Scores are exact (`bound` zero) or approximate within `bound`; the floor rises as better
    rows are seen and everything under it is dropped, so only a few rows per query stay.
    """

    def __init__(self, n_queries: int, k: int, bound: Bound) -> None:
        self.n, self.k, self.bound = n_queries, k, bound
        self.query = torch.zeros(0, dtype=torch.long)
        self.row = torch.zeros(0, dtype=torch.long)
        self.score = torch.zeros(0, dtype=torch.float32)
        self.floor = torch.full((n_queries,), torch.finfo(torch.float32).min)
        self.kth = torch.full((n_queries,), -math.inf, dtype=torch.float64)

    @property
    def approximate(self) -> bool:
        return bool(self.bound.slack.any()) or self.bound.rel > 0

    def add(self, scores: torch.Tensor, offset: int) -> None:
        if scores.shape[1] >= self.k and not bool(torch.isfinite(self.kth).all()):
            # Until k rows are seen there is no floor: this chunk's own k-th best gives one.
            self._raise_floor(torch.topk(scores.float(), self.k, dim=1).values[:, -1].double())
        q, c = _at_or_above(scores, self.floor)
        self.query = torch.cat([self.query, q])
        self.row = torch.cat([self.row, c + offset])
        self.score = torch.cat([self.score, scores[q, c].float()])
        self._prune()

    def _raise_floor(self, kth: torch.Tensor) -> None:
        finite = torch.isfinite(kth)
        self.kth = torch.where(finite & (kth > self.kth), kth, self.kth)
        floor = self.bound.floor(self.kth)
        # Rounded down to float32, so the comparison with float32 scores stays on the safe side.
        floor32 = floor.float()
        floor32 = torch.where(floor32.double() > floor, torch.nextafter(floor32, torch.tensor(-math.inf)), floor32)
        self.floor = torch.where(torch.isfinite(self.kth), torch.maximum(self.floor, floor32), self.floor)

    def _ranked(self) -> torch.Tensor:
        """Positions of each query's candidates, best first (ties: lower row first)."""
        order = np.lexsort((self.row.numpy(), -self.score.numpy(), self.query.numpy()))
        return torch.from_numpy(order)

    def _prune(self) -> None:
        order = self._ranked()
        self.query, self.row, self.score = self.query[order], self.row[order], self.score[order]
        counts = torch.bincount(self.query, minlength=self.n)
        rank = torch.arange(len(self.query)) - (torch.cumsum(counts, 0) - counts)[self.query]
        at_k = rank == self.k - 1
        kth = torch.full((self.n,), -math.inf, dtype=torch.float64)
        kth[self.query[at_k]] = self.score[at_k].double()
        self._raise_floor(kth)
        keep = self.score >= self.floor[self.query]
        if not self.approximate:
            keep &= rank < self.k  # exact scores: the top k so far is all that can matter
        self.query, self.row, self.score = self.query[keep], self.row[keep], self.score[keep]

    def rescore(self, exact: Any) -> None:
        """Replace approximate scores by `exact(rows) -> (n_queries, len(rows))` and keep the top k."""
        rows, where = torch.unique(self.row, return_inverse=True)
        fresh = torch.empty(len(self.score), dtype=torch.float32)
        for s in range(0, len(rows), MIN_CORPUS_CHUNK):
            part = (where >= s) & (where < s + MIN_CORPUS_CHUNK)
            scores = exact(rows[s : s + MIN_CORPUS_CHUNK])
            fresh[part] = scores[self.query[part], where[part] - s]
        self.score = fresh
        self.bound = Bound.exact(self.n)
        self.kth.fill_(-math.inf)
        self.floor.fill_(torch.finfo(torch.float32).min)
        self._prune()

    def top(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, rows), each (n_queries, k), best first; short rows padded with -inf / -1."""
        order = self._ranked()
        q, r, s = self.query[order], self.row[order], self.score[order]
        counts = torch.bincount(q, minlength=self.n)
        rank = torch.arange(len(q)) - (torch.cumsum(counts, 0) - counts)[q]
        take = rank < self.k
        scores = torch.full((self.n, self.k), -math.inf)
        rows = torch.full((self.n, self.k), -1, dtype=torch.long)
        scores[q[take], rank[take]] = s[take]
        rows[q[take], rank[take]] = r[take]
        return scores, rows


GROUP = 128  # columns scanned as one group when looking for scores above the floor
_BITS = {torch.float32: torch.int32, torch.bfloat16: torch.int16}


def _at_or_above(scores: torch.Tensor, floor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, column) of every score >= its query's floor (float32); may return a few more.

    Almost nothing passes, so comparing and listing all scores would cost more than the
    product itself. With positive floors the float bits order like integers: the largest
    integer of each group of columns says which groups hold anything, and only those are read.
    """
    n_q, n = scores.shape
    if scores.dtype not in _BITS or n < GROUP or not bool((floor > 0).all()):
        return (scores >= floor.unsqueeze(1)).nonzero(as_tuple=True)
    bits = scores.view(_BITS[scores.dtype])
    # bf16 floor: drop the low 16 bits of the float32 one, which rounds it down (it is positive).
    key = floor.view(torch.int32) >> 16 if scores.dtype == torch.bfloat16 else floor.view(torch.int32)
    key = key.to(bits.dtype).unsqueeze(1)
    main = n - n % GROUP
    if main == n:
        group_max = bits.view(n_q, n // GROUP, GROUP).amax(dim=2)
    else:
        group_max = bits[:, :main].reshape(n_q, main // GROUP, GROUP).amax(dim=2)
    gq, gg = (group_max >= key).nonzero(as_tuple=True)
    cols = gg.unsqueeze(1) * GROUP + torch.arange(GROUP)
    r, j = (bits[gq.unsqueeze(1), cols] >= key[gq]).nonzero(as_tuple=True)
    q, c = gq[r], cols[r, j]
    if main < n:
        tq, tc = (bits[:, main:] >= key).nonzero(as_tuple=True)
        q, c = torch.cat([q, tq]), torch.cat([c, tc + main])
    return q, c


def _gather(blocks: list[Block], rows: torch.Tensor) -> torch.Tensor:
    """fp32 vectors of global `rows` (sorted), wherever their blocks are."""
    rows_np = rows.numpy()
    parts = []
    for b in blocks:
        lo, hi = np.searchsorted(rows_np, [b.first, b.first + len(b.vectors)])
        if hi > lo:
            local = rows_np[lo:hi] - b.first
            parts.append(b.take(local) if b.take else np.asarray(b.vectors[local], dtype=np.float32))
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0)


def _fp32_scorer(blocks: list[Block], q: torch.Tensor, extra: torch.Tensor | None,
                 similarity: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Exact scores of the prepared queries against given global rows."""
    return lambda rows: score_chunk(q, extra, _gather(blocks, rows), similarity)


def _non_finite(row: int) -> ValueError:
    return ValueError(
        f"corpus row {row} gives a non-finite score: it contains NaN or infinity "
        "(or values so large that the product overflows)"
    )


def _check_finite(scores: torch.Tensor, offset: int) -> None:
    """A NaN or infinity in a corpus row makes its score non-finite for every query: name the row."""
    if not bool(torch.isfinite(scores).all()):
        raise _non_finite(offset + int((~torch.isfinite(scores)).nonzero()[0, -1]))


def topk_blocks(
    queries: torch.Tensor,
    blocks: Iterable[Block | tuple[int, Any]],
    top_k: int,
    similarity: str,
    n_rows: int,
    exclude: np.ndarray | None = None,
    query_chunk_size: int | None = None,
    corpus_chunk_size: int | None = None,
    progress: Any = None,
) -> TopK:
    """Exact top-k of `queries` over corpus `blocks` (`Block`s or (first_row, matrix) pairs).

    `n_rows` is the total number of corpus rows; rows where `exclude` is True are never
    returned. For "dot", blocks with a bf16 shadow are scanned in bf16 where that is faster on this
    CPU, and only the rows that can still be in the top k are re-scored in fp32 (see `prefilter.py`): the result is the
    same as scanning in fp32. The building block of `semantic_search` and of the index.
    """
    if top_k <= 0:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    blocks = [b if isinstance(b, Block) else Block(*b) for b in blocks]
    nq, dim = queries.shape
    n_allowed = n_rows - (int(exclude[:n_rows].sum()) if exclude is not None else 0)
    k = min(top_k, n_allowed)
    if nq == 0 or k <= 0:
        return TopK(np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64))
    qc, cc = _chunk_sizes(nq, query_chunk_size, corpus_chunk_size)
    use_shadows = similarity == "dot" and prefilter.bf16_scan_pays()
    shadows = [b.shadow for b in blocks if b.shadow is not None] if use_shadows else []
    prepared, trackers = [], []
    for s in range(0, nq, qc):
        q, extra = prepare_queries(queries[s : s + qc], similarity)
        bound, q16 = Bound.for_queries(q, shadows) if shadows else (Bound.exact(len(q)), None)
        prepared.append((q, extra, q16))
        trackers.append(_Candidates(len(q), k, bound))
    ex = torch.from_numpy(np.ascontiguousarray(exclude, dtype=bool)) if exclude is not None else None
    for block in blocks:
        shadow = block.shadow if shadows else None
        # Corpus outer, queries inner: every corpus row is read from memory (or disk) once.
        for start in range(0, len(block.vectors), cc):
            stop = min(start + cc, len(block.vectors))
            offset = block.first + start
            fast = shadow.rows(start, stop) if shadow is not None else None
            chunk = None
            for (q, extra, q16), cands in zip(prepared, trackers):
                if fast is not None and cands.approximate:
                    scores = bf16_scores(q16, fast)
                else:
                    if chunk is None:
                        chunk = as_matrix(block.vectors[start:stop], "corpus", dim=dim, check_finite=False)
                    scores = score_chunk(q, extra, chunk, similarity)
                    _check_finite(scores[:1], offset)
                if ex is not None:
                    dead = ex[offset:offset + stop - start]
                    if bool(dead.any()):
                        scores.masked_fill_(dead.unsqueeze(0), float("-inf"))
                cands.add(scores, offset)
                if cands.approximate and len(cands.row) > MAX_CANDIDATES:
                    # Too many near-ties for the bound to pay off (e.g. many copies of one
                    # vector): settle what is kept in fp32 and go on in fp32.
                    cands.rescore(_fp32_scorer(blocks, q, extra, similarity))
            if progress is not None:
                progress.update(stop - start)
    best_s, best_i = [], []
    for (q, extra, _), cands in zip(prepared, trackers):
        if cands.approximate:
            cands.rescore(_fp32_scorer(blocks, q, extra, similarity))
        s, i = cands.top()
        best_s.append(s)
        best_i.append(i)
    scores = torch.cat(best_s)
    indices = torch.cat(best_i)
    bad = (scores == math.inf) | torch.isnan(scores)  # overflow in a query other than the first
    if bool(bad.any()):
        raise _non_finite(int(indices[bad][0]))
    return TopK(scores.numpy(), indices.numpy().astype(np.int64))


def semantic_search(
    queries: Any,
    corpus: Any,
    top_k: int = 10,
    score: Any = None,
    *,
    query_chunk_size: int | None = None,
    corpus_chunk_size: int | None = None,
) -> TopK:
    """Exact top-k corpus rows for every query row, best first.

    `score` is a similarity name ("cosine", "dot", "euclidean", "manhattan"), an encoder (its
    `similarity_fn_name` is used) or None for cosine. Dot stays dot: vectors are never
    normalized unless the similarity is cosine. `top_k` larger than the corpus returns the
    whole corpus, ranked. Works on NumPy arrays, memory maps and tensors.

    >>> import numpy as np
    >>> corpus = np.eye(3, dtype=np.float32)
    >>> semantic_search(np.array([[0.0, 1.0, 0.1]]), corpus, top_k=2).indices.tolist()
    [[1, 2]]
    """
    similarity = resolve_similarity(score)
    if top_k is None or int(top_k) != top_k or top_k <= 0:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    q = as_matrix(queries, "queries")
    if _length(corpus) == 0:
        raise ValueError("the corpus is empty: add vectors before searching")
    c = corpus if isinstance(corpus, (np.ndarray, torch.Tensor)) else as_matrix(corpus, "corpus", check_finite=False)
    if c.ndim != 2:
        raise ValueError(f"corpus must be a matrix (rows = vectors), got shape {tuple(c.shape)}")
    if c.shape[1] != q.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but the corpus has dimension {c.shape[1]}")
    return topk_blocks(
        q, [(0, c)], int(top_k), similarity, len(c),
        query_chunk_size=query_chunk_size, corpus_chunk_size=corpus_chunk_size,
    )


def _length(x: Any) -> int:
    try:
        return len(x)
    except TypeError:
        return 0


def brute_force_topk(queries: np.ndarray, corpus: np.ndarray, top_k: int, similarity: str = "cosine") -> TopK:
    """The plain reference (`sentembed.vectors.topk` in float64, no bound on memory); for tests and small data."""
    scores, indices = topk(np.asarray(queries, np.float64), np.asarray(corpus, np.float64), top_k, similarity)
    return TopK(scores.astype(np.float32), indices)


__all__: Sequence[str] = ["TopK", "semantic_search", "topk_blocks", "brute_force_topk"]
