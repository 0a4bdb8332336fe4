"""Paraphrase mining: the most similar pairs within one collection, in chunks.

Same pairs as sentence-transformers' `paraphrase_mining_embeddings` (each text's `top_k`
nearest other texts, pairs deduplicated, best `max_pairs` kept), plus a score threshold, and
the model's similarity instead of always cosine.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


from ..encoder import encode_as
from ..vectors import as_matrix, resolve_similarity
from .exact import topk_blocks


def embed_if_texts(items: Any, encoder: Any, what: str, role: str = "document") -> np.ndarray:
    """`items` as a matrix: encoded with `encoder` in `role` ("query", "document") when they are texts."""
    if isinstance(items, (list, tuple)) and items and all(isinstance(t, str) for t in items):
        if encoder is None:
            raise ValueError(f"{what} are texts: pass encoder=... (e.g. sentembed.load('all-mpnet-base-v2'))")
        return encode_as(encoder, items, role)
    if isinstance(items, (list, tuple)) and any(isinstance(t, str) for t in items):
        bad = next(i for i, t in enumerate(items) if not isinstance(t, str))
        raise TypeError(f"{what}[{bad}] is {type(items[bad]).__name__}; expected all texts or a matrix of vectors")
    return items


def paraphrase_mining(
    texts: Sequence[str] | np.ndarray,
    encoder: Any = None,
    *,
    top_k: int = 100,
    threshold: float | None = None,
    max_pairs: int = 500_000,
    score: Any = None,
    query_chunk_size: int = 4096,
    corpus_chunk_size: int | None = None,
) -> list[tuple[float, int, int]]:
    """Pairs (score, i, j), i < j, of the most similar items, best first.

    `texts` are strings (embedded with `encoder`) or an embedding matrix. Each item
    contributes its `top_k` nearest other items; pairs under `threshold` are dropped.
    The similarity is `score`, else the encoder's, else cosine.

    >>> import numpy as np
    >>> paraphrase_mining(np.array([[1.0, 0], [0.9, 0.1], [0, 1.0]]), top_k=1)[0][1:]
    (0, 1)
    """
    if top_k <= 0 or max_pairs <= 0:
        raise ValueError(f"top_k and max_pairs must be positive, got top_k={top_k}, max_pairs={max_pairs}")
    similarity = resolve_similarity(score if score is not None else encoder)
    emb = as_matrix(embed_if_texts(texts, encoder, "texts"), "embeddings")
    n = len(emb)
    if n < 2:
        return []
    keep_s = np.zeros(0, np.float32)
    keep_i = np.zeros(0, np.int64)
    keep_j = np.zeros(0, np.int64)
    for start in range(0, n, query_chunk_size):
        q = emb[start : start + query_chunk_size]
        res = topk_blocks(q, [(0, emb)], top_k + 1, similarity, n, corpus_chunk_size=corpus_chunk_size)
        rows = np.arange(start, start + len(q))[:, None]
        not_self = res.indices != rows
        # Drop the item itself; when it is missing (exact duplicates) keep only top_k others.
        rank = np.cumsum(not_self, axis=1)
        take = not_self & (rank <= top_k)
        s = res.scores[take]
        i = np.broadcast_to(rows, res.indices.shape)[take]
        j = res.indices[take]
        if threshold is not None:
            ok = s >= threshold
            s, i, j = s[ok], i[ok], j[ok]
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        keep_s = np.concatenate([keep_s, s])
        keep_i = np.concatenate([keep_i, lo])
        keep_j = np.concatenate([keep_j, hi])
        keep_s, keep_i, keep_j = _dedup_best(keep_s, keep_i, keep_j, n, max_pairs)
    order = np.lexsort((keep_j, keep_i, -keep_s))
    return [(float(keep_s[o]), int(keep_i[o]), int(keep_j[o])) for o in order]


def _dedup_best(s: np.ndarray, i: np.ndarray, j: np.ndarray, n: int, max_pairs: int):
    """Unique (i, j) pairs, the best `max_pairs` of them by score."""
    key = i * n + j
    order = np.lexsort((-s, key))  # by pair, best score first within a pair
    key, s, i, j = key[order], s[order], i[order], j[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    s, i, j = s[first], i[first], j[first]
    if len(s) > max_pairs:
        top = np.argpartition(-s, max_pairs - 1)[:max_pairs]
        s, i, j = s[top], i[top], j[top]
    return s, i, j


