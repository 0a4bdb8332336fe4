"""Ranking inside one consistent view of an index: dense (exact or ANN), lexical, hybrid.

`Index.search_many` embeds the queries and opens a `View` (view.py); `rank` does the rest
there: the best passages per query, grouped into documents (a document ranks by its best
passage), fused for hybrid search, and turned into `Hit`s. Everything it reads comes from
that one view, so a search never mixes two committed states.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..vectors import pairwise_scores
from . import ann, fusion
from .exact import topk_blocks
from .lexical import HEAD_MARGIN
from .view import View

# Each list of a hybrid search holds at least this many documents before fusion, so that a
# document well below the top k of one list can still rise on the other's evidence. One depth
# for every k up to it, so a search's top 10 is the first 10 of its top 100. Chosen on
# SciFact's train queries (benchmarks/RESULTS.md): 300 gave RRF's best Recall@100 there.
FUSION_DEPTH = 300


@dataclass(frozen=True)
class Hit:
    """One search result: document id, score, text, metadata, and the passage that matched.

    The score is the index's similarity for mode "dense", BM25 for "lexical" and the fused
    score for "hybrid"; in a reranked search, the cross-encoder's score of (query, passage),
    whatever the mode. `text[span[0]:span[1]] == passage`; unchunked, the passage is the text.
    """

    id: str
    score: float
    text: str | None
    metadata: Any = None
    passage: str | None = None
    span: tuple[int, int] | None = None


def rank(view: View, q: np.ndarray, dense_for: list[int], expressions: list[str | None], mode: str, k: int,
         where: dict[str, Any] | None, alpha: float | None) -> list[list[Hit]]:
    """Per query, its `k` best documents in `view`.

    `q` holds the query vectors of queries `dense_for` (in that order); `expressions` the FTS5
    expression of each query (None: no words, or a dense search).
    """
    if view.snap.n_alive == 0:
        return [[] for _ in expressions]
    depth = max(k, FUSION_DEPTH) if mode == "hybrid" else k
    dense = dict(zip(dense_for, _dense(view, q, depth, where) if dense_for else []))
    lexical = {i: view.catalog.search_lexical(e, depth, where, view.snap.live_rows, view.snap.n_alive)
               for i, e in enumerate(expressions) if e}
    # Fusion needs only each passage's document; texts are read only for the hits returned.
    fused = {r for i in lexical for r, _ in (*dense[i], *lexical[i])} if mode == "hybrid" else ()
    parents = view.catalog.parents(fused)
    ranked = []
    for i, e in enumerate(expressions):
        if e is None or mode == "dense":
            ranked.append(dense[i][:k])
        elif mode == "lexical":
            ranked.append(lexical[i][:k])
        else:
            ranked.append(_fuse(dense[i], lexical[i], parents, k, alpha))
    docs = view.catalog.fetch({r for found in ranked for r, _ in found})
    return [[_hit(docs[r], s) for r, s in found if r in docs] for found in ranked]


def _dense(view: View, q: np.ndarray, k: int, where: dict[str, Any] | None) -> list[list[tuple[int, float]]]:
    """Per query, the `k` best documents as (best passage row, score), best first."""
    snap = view.snap
    sim = "dot" if view.similarity == "cosine" else view.similarity
    exclude = snap.deleted if snap.deleted.any() else None
    index = view.ann()
    if where is not None:
        exclude = np.ones(snap.n_rows, dtype=bool)
        exclude[view.catalog.rows_where(where)] = False
        index = None
    live = snap.live_rows if where is None else snap.n_rows - int(exclude.sum())
    # Several passages of one document may fill the top rows: ask first for a quarter more rows
    # than k documents hold on average, then for more until k documents are found or every row
    # was ranked (a second scan costs more than the extra rows of the first). A row a document
    # needs no margin.
    per_document = snap.live_rows / max(snap.n_alive, 1)
    fetch = min(math.ceil(k * (HEAD_MARGIN * per_document if per_document > 1 else 1.0)), max(live, 1))
    while True:
        if index is not None and int(snap.state.get("ann_rows", 0)) == snap.n_rows:
            scores, rows = _search_ann(view, index, q, fetch, sim)
        else:
            res = topk_blocks(torch.from_numpy(q), view.blocks(), fetch, sim, snap.n_rows, exclude)
            scores, rows = res.scores, res.indices
        parents = view.catalog.parents(np.unique(rows[rows >= 0]))
        out, short = [], False
        for srow, rrow in zip(scores, rows):
            seen: set[int] = set()
            ranked = []
            for s, r in zip(srow, rrow):
                doc = parents.get(int(r)) if r >= 0 and np.isfinite(s) else None
                if doc is not None and doc not in seen and len(ranked) < k:
                    seen.add(doc)
                    ranked.append((int(r), float(s)))
            out.append(ranked)
            short |= len(ranked) < k
        if not short or fetch >= live:
            return out
        fetch = min(fetch * 4, live)


def _search_ann(view: View, index: Any, q: np.ndarray, k: int, sim: str) -> tuple[np.ndarray, np.ndarray]:
    snap = view.snap
    fetch = k * view.params.refine if view.kind == "ivfpq" else k
    _, rows = ann.search(index, view.kind, q, min(fetch, snap.n_rows), view.params, snap.deleted)
    # Re-score the candidates exactly: the score is then the model's similarity, whatever
    # the structure approximated (PQ codes, squared L2).
    scores = np.full(rows.shape, -np.inf, dtype=np.float32)
    for i in range(len(q)):
        valid = rows[i] >= 0
        if valid.any():
            vecs = view.gather(rows[i][valid])
            scores[i, valid] = pairwise_scores(q[i : i + 1], vecs, sim)[0]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows = np.take_along_axis(rows, order, 1)
    scores = np.take_along_axis(scores, order, 1)
    rows[~np.isfinite(scores)] = -1
    return scores, rows


def _hit(doc: tuple[str, str | None, Any, int, int], score: float) -> Hit:
    id_, text, meta, start, stop = doc
    return Hit(id_, score, text, meta, text[start:stop] if text is not None else None, (start, stop))


def _fuse(dense: list[tuple[int, float]], lexical: list[tuple[int, float]], parents: dict[int, int], k: int,
          alpha: float | None) -> list[tuple[int, float]]:
    """Fuse two lists of (passage row, score) by document (`parents`: passage row -> document
    row); a document keeps the passage of the list that ranks it higher (dense on a tie)."""
    best: dict[int, tuple[int, int]] = {}
    keyed = []
    for ranked in (dense, lexical):
        ranked = [(r, s) for r, s in ranked if r in parents]
        keyed.append([(parents[r], s) for r, s in ranked])
        for rank_, (r, _) in enumerate(ranked):
            if parents[r] not in best or rank_ < best[parents[r]][0]:
                best[parents[r]] = (rank_, r)
    fused = fusion.rrf(*keyed) if alpha is None else fusion.weighted(*keyed, alpha)
    return [(best[key][1], score) for key, score in fused[:k]]
