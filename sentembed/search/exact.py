"""Exact top-k search: chunked matrix products with a running top-k, within a memory bound.

The corpus is read once, in chunks of rows; every chunk is scored against a chunk of queries
and only each query's best k survive. Extra memory is the score buffer
(query chunk x corpus chunk, about 64 MB at most) plus the running top-k, whatever the corpus
size, so a memory-mapped 1M x 768 matrix is searched without loading it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .similarity import as_matrix, prepare_queries, resolve_similarity, score_chunk

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


def _check_scores(scores: torch.Tensor, offset: int) -> None:
    """NaN or infinity in a corpus row shows up in its score column: name the row."""
    if not bool(torch.isfinite(scores).all()):
        col = int((~torch.isfinite(scores)).any(dim=0).nonzero()[0, 0])
        raise ValueError(
            f"corpus row {offset + col} gives a non-finite score: it contains NaN or infinity "
            "(or values so large that the product overflows)"
        )


def topk_blocks(
    queries: torch.Tensor,
    blocks: Iterable[tuple[int, Any]],
    top_k: int,
    similarity: str,
    n_rows: int,
    exclude: np.ndarray | None = None,
    query_chunk_size: int | None = None,
    corpus_chunk_size: int | None = None,
    progress: Any = None,
) -> TopK:
    """Exact top-k of `queries` over corpus `blocks` [(first_row, matrix), ...].

    `n_rows` is the total number of corpus rows; rows where `exclude` is True are never
    returned. The building block of `semantic_search` and of the persistent index, whose
    vectors live in several memory-mapped segments.
    """
    if top_k <= 0:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    nq, dim = queries.shape
    n_allowed = n_rows - (int(exclude[:n_rows].sum()) if exclude is not None else 0)
    k = min(top_k, n_allowed)
    if nq == 0 or k <= 0:
        return TopK(np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64))
    qc, cc = _chunk_sizes(nq, query_chunk_size, corpus_chunk_size)
    prepared = [prepare_queries(queries[s : s + qc], similarity) for s in range(0, nq, qc)]
    best_s = [None] * len(prepared)
    best_i = [None] * len(prepared)
    ex = torch.from_numpy(np.ascontiguousarray(exclude, dtype=bool)) if exclude is not None else None
    for first, block in blocks:
        # Corpus outer, queries inner: every corpus row is read from memory (or disk) once.
        for start in range(0, len(block), cc):
            chunk = as_matrix(block[start : start + cc], "corpus", dim=dim, check_finite=False)
            offset = first + start
            for j, (q, extra) in enumerate(prepared):
                scores = score_chunk(q, extra, chunk, similarity)
                _check_scores(scores, offset)
                if ex is not None:
                    dead = ex[offset : offset + len(chunk)]
                    if bool(dead.any()):
                        scores.masked_fill_(dead.unsqueeze(0), float("-inf"))
                kk = min(k, scores.shape[1])
                s, i = torch.topk(scores, kk, dim=1)
                i += offset
                if best_s[j] is not None:
                    s = torch.cat([best_s[j], s], dim=1)
                    i = torch.cat([best_i[j], i], dim=1)
                    s, pos = torch.topk(s, min(k, s.shape[1]), dim=1)
                    i = torch.gather(i, 1, pos)
                best_s[j], best_i[j] = s, i
            if progress is not None:
                progress.update(len(chunk))
    scores = torch.cat(best_s).numpy()
    indices = torch.cat(best_i).numpy().astype(np.int64)
    return TopK(scores, indices)


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
    """The plain NumPy reference (whole score matrix in memory); for tests and small data."""
    q = np.asarray(queries, dtype=np.float64)
    c = np.asarray(corpus, dtype=np.float64)
    if similarity == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        s = q @ c.T
    elif similarity == "dot":
        s = q @ c.T
    elif similarity == "euclidean":
        s = -np.sqrt(((q[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    else:
        s = -np.abs(q[:, None, :] - c[None, :, :]).sum(-1)
    k = min(top_k, s.shape[1])
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return TopK(np.take_along_axis(s, idx, 1).astype(np.float32), idx.astype(np.int64))


__all__: Sequence[str] = ["TopK", "semantic_search", "topk_blocks", "brute_force_topk"]
