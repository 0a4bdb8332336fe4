"""Exact top-k search: chunked matrix products with a running top-k, within a memory bound.

The corpus is read once, in chunks of rows; every chunk is scored against a chunk of queries
and only each query's best k survive (candidates.py). Extra memory is the score buffer
(query chunk x corpus chunk, about 64 MB at most) plus the running top-k, whatever the corpus
size, so a memory-mapped 1M x 768 matrix is searched without loading it. For inner products,
a block with an int8 or bf16 copy (int8_scan.py, prefilter.py) is scanned in the copy where this
CPU does that faster, and the rows that can still be in the top k are re-scored in fp32.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from . import int8_scan, prefilter
from .candidates import Candidates
from .int8_scan import Int8Copy, Int8Scan
from .prefilter import Shadow
from ..vectors import as_matrix, prepare_queries, resolve_similarity, score_chunk, topk

SCORE_BUFFER_FLOATS = 1 << 24  # 64 MB of scores at most per step
MAX_CORPUS_CHUNK = 65536
MIN_CORPUS_CHUNK = 4096
# Rows a step through an int8 or bf16 copy: the scores stay in cache between the product and
# the look for survivors, and each step's fixed cost (tens of small tensor operations) is paid
# 31 times a million rows (benchmarks/RESULTS.md: 16,384 and 65,536 were slower).
COPY_CHUNK = 32768


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
    """Corpus rows [first, first + len(vectors)); `copy` is their bf16 `Shadow` or `Int8Copy`, if any."""

    first: int
    vectors: Any
    copy: Shadow | Int8Copy | None = None
    take: Callable[[np.ndarray], np.ndarray] | None = None  # reads rows by block-local number


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
                 similarity: str) -> Callable[[int, int, torch.Tensor], torch.Tensor]:
    """Exact scores of prepared queries [lo, hi) against given global rows."""
    def scores(lo: int, hi: int, rows: torch.Tensor) -> torch.Tensor:
        c = _gather(blocks, rows.repeat(2) if len(rows) == 1 else rows)  # one row: summed as 2 are
        return score_chunk(q[lo:hi], extra[lo:hi] if extra is not None else None, c, similarity)[:, :len(rows)]
    return scores


def _int8_refiner(blocks: list[Block], copies: list[Shadow | Int8Copy | None], scan: Int8Scan) -> Callable:
    """Candidates' `refine`: pairs whose rows are in int8-scanned blocks get Int8Scan.refine's
    scores and bounds; the others keep theirs."""
    spans = [(b.first, b.first + len(b.vectors), c) for b, c in zip(blocks, copies) if isinstance(c, Int8Copy)]

    def refine(query: torch.Tensor, rows: torch.Tensor, score: torch.Tensor,
               err: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for lo, hi, copy in spans:
            at = ((rows >= lo) & (rows < hi)).nonzero()[:, 0]
            if len(at):
                score[at], err[at] = scan.refine(copy, query[at], rows[at] - lo)
        return score, err
    return refine


def _non_finite(row: int) -> ValueError:
    return ValueError(
        f"corpus row {row} gives a non-finite score: it contains NaN or infinity "
        "(or values so large that the product overflows)"
    )


def _check_finite(scores: torch.Tensor, offset: int) -> None:
    """A NaN or infinity in a corpus row makes its score non-finite for every query: name the row."""
    if not bool(torch.isfinite(scores).all()):
        raise _non_finite(offset + int((~torch.isfinite(scores)).nonzero()[0, -1]))


def _scans(q: torch.Tensor, copies: list[Shadow | Int8Copy]) -> dict[type, Any]:
    """The approximate scans of prepared queries `q`, one per kind of copy among `copies`."""
    kinds = {Shadow: prefilter.Bf16Scan, Int8Copy: Int8Scan}
    return {kind: scan(q, [c for c in copies if isinstance(c, kind)])
            for kind, scan in kinds.items() if any(isinstance(c, kind) for c in copies)}


def _scanned_copy(block: Block) -> Shadow | Int8Copy | None:
    """The block's copy, when this CPU scans that kind faster than fp32 (prefilter.py, int8_scan.py)."""
    if isinstance(block.copy, Int8Copy) and int8_scan.int8_scan_pays() and block.copy.fits(block.vectors):
        return block.copy
    if isinstance(block.copy, Shadow) and prefilter.bf16_scan_pays():
        return block.copy
    return None


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
    returned. For "dot", blocks with an int8 or bf16 copy are scanned in it where that is faster
    on this CPU, and only the rows that can still be in the top k are re-scored in fp32
    (int8_scan.py, prefilter.py): the result is the same as scanning in fp32. The building
    block of `semantic_search` and of the index.
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
    copies = [_scanned_copy(b) if similarity == "dot" else None for b in blocks]
    prepared, trackers = [], []
    for s in range(0, nq, qc):
        q, extra = prepare_queries(queries[s : s + qc], similarity)
        scans = _scans(q, [c for c in copies if c is not None])
        slack = torch.zeros(len(q), dtype=torch.float64)
        for scan in scans.values():
            slack = torch.maximum(slack, scan.slack)
        prepared.append((q, extra, scans))
        trackers.append(Candidates(len(q), k, slack, max((sc.rel for sc in scans.values()), default=0.0),
                                   _fp32_scorer(blocks, q, extra, similarity),
                                   _int8_refiner(blocks, copies, scans[Int8Copy]) if Int8Copy in scans else None))
    ex = torch.from_numpy(np.ascontiguousarray(exclude, dtype=bool)) if exclude is not None else None
    steps = 0
    for block, copy in zip(blocks, copies):
        step = min(cc, COPY_CHUNK) if copy is not None else cc
        # Corpus outer, queries inner: every corpus row is read from memory (or disk) once.
        for start in range(0, len(block.vectors), step):
            stop = min(start + step, len(block.vectors))
            offset = block.first + start
            chunk = None
            for (q, extra, scans), cands in zip(prepared, trackers):
                scale = slack = None
                if copy is not None and cands.fast:
                    scan = scans[type(copy)]
                    scores, scale = scan.scores(copy, start, stop)
                    slack = functools.partial(scan.row_slack, copy, start)
                else:
                    if chunk is None:
                        chunk = as_matrix(block.vectors[start:stop], "corpus", dim=dim, check_finite=False)
                    scores = score_chunk(q, extra, chunk, similarity)
                    _check_finite(scores[:1], offset)
                if ex is not None:
                    dead = ex[offset:offset + stop - start]
                    if bool(dead.any()):
                        scores.masked_fill_(dead.unsqueeze(0), float("-inf"))
                cands.add(scores, offset, scale, slack)
                if cands.fast and steps and steps & (steps + 1) == 0:  # after 2, 4, 8, ... steps (1: in add)
                    cands.tighten()
                if cands.fast and len(cands.row) > MAX_CANDIDATES:
                    # Too many near-ties for the bound to pay off (e.g. many copies of one
                    # vector): settle what is kept in fp32 and go on in fp32.
                    cands.rescore()
            steps += 1
            if progress is not None:
                progress.update(stop - start)
    best_s, best_i = [], []
    for (q, extra, _), cands in zip(prepared, trackers):
        if cands.fast:
            cands.rescore()
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
