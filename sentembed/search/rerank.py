"""Retrieve, then rerank: a cross-encoder rescoring the documents a search found.

A bi-encoder ranks a whole collection cheaply; a cross-encoder reads the query and a passage
together and ranks better, at a forward pass per pair. So a reranked search retrieves
`rerank_top_k` documents in its mode (by default the larger of top_k and RERANK_DEPTH, the
depth of sentence-transformers' retrieve & re-rank examples), and the cross-encoder orders
them by (query, the passage that matched): for a chunked document, the window the search
found, which fits the cross-encoder as the whole text may not. All queries' pairs go to one
`predict` call, which batches them by length. With `alpha`, the order is a blend instead:
alpha times the reranker's scores plus 1 - alpha times the first stage's, each min-max
normalised over the reranked list (fusion.weighted), so evidence the cross-encoder cannot see
(words BM25 matched in the rest of the document, the bi-encoder's view) still counts.

>>> hits = index.search("who wrote it?", top_k=5, rerank=sentembed.load_cross_encoder("reranker"))  # doctest: +SKIP
>>> hits[0].score  # the cross-encoder's                                                           # doctest: +SKIP
0.97
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from .fusion import check_weight, weighted
from .searching import Hit

RERANK_DEPTH = 100  # documents retrieved per query for the cross-encoder, unless rerank_top_k says


def rerank_depth(reranker: Any, queries: Sequence[Any], top_k: int, rerank_top_k: int | None = None,
                 label: str | int | None = None, alpha: float | None = None) -> int:
    """How many documents to retrieve per query for `reranker` to cut to `top_k` (without a
    reranker, top_k); checks the arguments first, naming the bad one (vector queries cannot be
    reranked).

    >>> rerank_depth(reranker, ["q"], 10), rerank_depth(reranker, ["q"], 10, rerank_top_k=20)  # doctest: +SKIP
    (100, 20)
    """
    if reranker is None:
        if rerank_top_k is not None or label is not None or alpha is not None:
            raise ValueError("rerank_top_k, rerank_label and rerank_alpha need rerank (the cross-encoder that reranks)")
        return int(top_k)
    if alpha is not None:
        check_weight(alpha, "rerank_alpha", "the reranker's weight")
    if not all(isinstance(q, str) for q in queries):
        raise ValueError("rerank needs query texts: a cross-encoder reads the query's words, so a vector query "
                         "cannot be reranked")
    label_column(reranker, label)
    if rerank_top_k is None:
        return max(int(top_k), RERANK_DEPTH)
    if isinstance(rerank_top_k, bool) or not isinstance(rerank_top_k, (int, np.integer)) or rerank_top_k < top_k:
        raise ValueError(f"rerank_top_k must be an integer >= top_k ({top_k}): the documents reranked, of which "
                         f"the best top_k are returned; got {rerank_top_k!r}")
    return int(rerank_top_k)


def label_column(reranker: Any, label: str | int | None) -> int | None:
    """The column of a multi-label reranker's scores that ranks (a label name or index); None
    for a reranker with one score per pair."""
    n = int(getattr(reranker, "num_labels", 1))
    names = [str(name) for name in getattr(reranker, "labels", [])]
    if label is None:
        if n > 1:
            raise ValueError(f"rerank_label: this reranker has {n} labels ({', '.join(names) or 'unnamed'}); "
                             "give rerank_label (a name or an index) to rank by one of them")
        return None
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < n:
        return label
    if label in names:
        return names.index(label)
    raise ValueError(f"rerank_label={label!r} is not a label of this reranker: {names or list(range(n))}")


def rerank_hits(reranker: Any, queries: Sequence[str], hits: Sequence[Sequence[Hit]], top_k: int,
                label: str | int | None = None, batch_size: int = 32,
                show_progress: bool | None = None, alpha: float | None = None) -> list[list[Hit]]:
    """Per query, its `hits` rescored by `reranker` on (query, hit.passage) and ordered by
    that score, best first (a tie keeps the retrieval order), cut to `top_k`; each hit's
    `score` is then the reranker's. `label` picks the column of a multi-label reranker;
    `alpha` blends the reranker's scores with the hits' own (the module doc) and the hits
    carry the blend.

    >>> found = index.search_many(["kitten"], top_k=100)                  # doctest: +SKIP
    >>> rerank_hits(reranker, ["kitten"], found, top_k=3)[0][0].score     # doctest: +SKIP
    0.91
    """
    if len(queries) != len(hits):
        raise ValueError(f"{len(queries)} queries for {len(hits)} lists of hits")
    column = label_column(reranker, label)
    pairs = [(query, _passage(hit)) for query, found in zip(queries, hits) for hit in found]
    progress = {} if show_progress is None else {"show_progress": show_progress}  # stand-ins may lack it
    scores = np.asarray(reranker.predict(pairs, batch_size=batch_size, **progress) if pairs else np.zeros(0),
                        dtype=np.float32)
    if column is not None and scores.ndim == 2:
        scores = scores[:, column]
    if scores.shape != (len(pairs),):
        raise ValueError(f"the reranker gave scores of shape {scores.shape} for {len(pairs)} pairs; "
                         "it must give one per pair (or pass rerank_label for several labels)")
    out, start = [], 0
    for found in hits:
        mine = scores[start : start + len(found)]
        start += len(found)
        if alpha is None:
            ranked = [(int(i), float(mine[i])) for i in np.argsort(-mine, kind="stable")[:top_k]]
        else:
            by_reranker = [(int(i), float(mine[i])) for i in np.argsort(-mine, kind="stable")]
            ranked = weighted(by_reranker, [(i, hit.score) for i, hit in enumerate(found)], alpha)[:top_k]
        out.append([dataclasses.replace(found[i], score=float(score)) for i, score in ranked])
    return out


def _passage(hit: Hit) -> str:
    text = hit.passage if hit.passage is not None else hit.text
    if text is None:
        raise ValueError(f"document {hit.id!r} has no stored text for the reranker to read")
    return text
