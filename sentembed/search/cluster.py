"""Clustering: fast community detection (threshold-based) and k-means through FAISS."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .mining import embed_if_texts
from ..vectors import as_matrix, prepare_queries, resolve_similarity, score_chunk

SCORE_BUFFER_FLOATS = 1 << 24


def community_detection(
    embeddings: Sequence[str] | np.ndarray,
    threshold: float = 0.75,
    min_size: int = 10,
    *,
    encoder: Any = None,
    score: Any = None,
    batch_size: int | None = None,
) -> list[list[int]]:
    """Groups of items whose similarity to a central item is at least `threshold`.

    The algorithm of sentence-transformers' `community_detection`: every item with at least
    `min_size` neighbours (itself included) at or above `threshold` proposes a community;
    largest first, each keeps the members not yet taken, if still `min_size` or more. The
    central item comes first, then members by decreasing similarity. Communities are sorted
    by size, largest first. The similarity is `score`, else the encoder's, else cosine.

    >>> import numpy as np
    >>> community_detection(np.array([[1.0, 0], [0.99, 0.05], [0, 1.0]]), threshold=0.9, min_size=2)
    [[0, 1]]
    """
    if min_size <= 0:
        raise ValueError(f"min_size must be positive, got {min_size}")
    similarity = resolve_similarity(score if score is not None else encoder)
    emb = as_matrix(embed_if_texts(embeddings, encoder, "embeddings"), "embeddings")
    n = len(emb)
    if n == 0 or n < min_size:
        return []
    corpus, _ = prepare_queries(emb, similarity)  # cosine: unit rows once, then plain dot
    sim = "dot" if similarity == "cosine" else similarity
    step = batch_size or max(1, min(1024, SCORE_BUFFER_FLOATS // n))
    proposals: list[tuple[int, np.ndarray]] = []
    for start in range(0, n, step):
        q, extra = prepare_queries(corpus[start : start + step], sim)
        scores = score_chunk(q, extra, corpus, sim).numpy()
        counts = (scores >= threshold).sum(axis=1)
        for r in np.flatnonzero(counts >= min_size):
            members = np.flatnonzero(scores[r] >= threshold)
            members = members[np.argsort(-scores[r, members], kind="stable")]
            proposals.append((start + int(r), members))
    proposals.sort(key=lambda p: len(p[1]), reverse=True)  # stable: ties keep item order
    used = np.zeros(n, dtype=bool)
    out: list[list[int]] = []
    for center, members in proposals:
        if used[center]:
            continue
        free = members[~used[members]]
        if len(free) >= min_size:
            community = [center] + [int(m) for m in free if m != center]
            out.append(community)
            used[community] = True
    return sorted(out, key=len, reverse=True)


@dataclass(frozen=True)
class KMeansResult:
    """labels[i] is item i's cluster; centroids is (k, dim); objective: total similarity of the
    items to their centroids (inner product), or minus the squared error (euclidean); higher is better."""

    labels: np.ndarray
    centroids: np.ndarray
    objective: float


def kmeans(
    embeddings: Sequence[str] | np.ndarray,
    k: int,
    *,
    encoder: Any = None,
    score: Any = None,
    niter: int = 25,
    nredo: int = 1,
    seed: int = 0,
) -> KMeansResult:
    """k-means through FAISS; spherical (unit centroids, cosine) for cosine models.

    `nredo` restarts keep the best of several random initialisations (k-means has local minima).

    >>> import numpy as np
    >>> x = np.r_[np.random.randn(20, 4) + 10, np.random.randn(20, 4) - 10].astype("float32")
    >>> len(set(kmeans(x, 2, score="euclidean").labels[:20]))
    1
    """
    import faiss

    similarity = resolve_similarity(score if score is not None else encoder)
    x = as_matrix(embed_if_texts(embeddings, encoder, "embeddings"), "embeddings").numpy()
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be between 1 and the number of items ({len(x)}), got {k}")
    spherical = similarity == "cosine"
    if spherical:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x = np.ascontiguousarray(x, dtype=np.float32)
    best: KMeansResult | None = None
    # Restarts are run here, not through faiss's nredo, because faiss ranks spherical runs by an
    # objective where lower is better while their inner-product objective grows with quality.
    for r in range(max(1, nredo)):
        km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed + r, spherical=spherical, verbose=False,
                          max_points_per_centroid=max(256, len(x)))
        km.train(x)
        index = faiss.IndexFlatIP(x.shape[1]) if spherical or similarity == "dot" else faiss.IndexFlatL2(x.shape[1])
        index.add(km.centroids)
        dist, labels = index.search(x, 1)
        # Quality: total similarity to the own centroid (cosine) or minus the squared error.
        quality = float(dist.sum()) if spherical or similarity == "dot" else -float(dist.sum())
        if best is None or quality > best.objective:
            best = KMeansResult(labels[:, 0].astype(np.int64), km.centroids.copy(), quality)
    assert best is not None
    return best
