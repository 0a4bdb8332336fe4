"""Approximate nearest-neighbour structures through FAISS: HNSW and IVF-PQ.

The exact vectors always stay in the index's segments too, so ANN candidates are re-scored
exactly (IVF-PQ's compressed distances are coarse) and filtered searches fall back to exact.
FAISS ids are the index's row numbers: rows are appended in order and never renumbered.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("exact", "hnsw", "ivfpq")


@dataclass
class AnnParams:
    """Tuning knobs; defaults favour recall (recall@10 >= 0.98 on SciFact-sized data)."""

    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    nlist: int = 0          # 0: about 4 * sqrt(n) at training time
    pq_m: int = 0           # 0: dimension / 8 sub-quantizers (each 8 dimensions)
    pq_nbits: int = 8
    nprobe: int = 16
    refine: int = 4         # IVF-PQ fetches refine * top_k candidates and re-scores them exactly
    min_train: int = 0      # 0: 39 * 2**pq_nbits vectors before IVF-PQ trains; exact until then

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "AnnParams":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown index parameters {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def faiss_metric(similarity: str):
    import faiss

    # Cosine indexes store unit vectors, so inner product is cosine.
    return {"cosine": faiss.METRIC_INNER_PRODUCT, "dot": faiss.METRIC_INNER_PRODUCT,
            "euclidean": faiss.METRIC_L2, "manhattan": faiss.METRIC_L1}[similarity]


def check_kind(kind: str, similarity: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}: use one of {', '.join(KINDS)}")
    if kind == "ivfpq" and similarity == "manhattan":
        raise ValueError("IVF-PQ supports cosine, dot and euclidean similarity only; use kind='hnsw' or 'exact'")


def min_train_rows(params: AnnParams) -> int:
    return params.min_train or 39 * (1 << params.pq_nbits)


def build(kind: str, dim: int, similarity: str, params: AnnParams, train: np.ndarray | None = None):
    """A new, empty FAISS index (IVF-PQ is trained on `train`)."""
    import faiss

    metric = faiss_metric(similarity)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, metric)
        index.hnsw.efConstruction = params.ef_construction
        return index
    if kind == "ivfpq":
        assert train is not None
        nlist = params.nlist or max(1, min(int(4 * np.sqrt(len(train))), len(train) // 39))
        m = params.pq_m or max(1, dim // 8)
        if dim % m:
            raise ValueError(f"pq_m={m} must divide the dimension {dim}")
        quantizer = faiss.IndexFlat(dim, metric)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, params.pq_nbits, metric)
        # faiss's Python wrapper keeps `quantizer` alive as long as `index` (referenced_objects).
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        return index
    raise ValueError(f"kind {kind!r} has no ANN structure")


def updated(kind: str, current, new: np.ndarray, n_old: int, dim: int, similarity: str, params: AnnParams,
            old_vectors) -> object | None:
    """The ANN structure after adding `new` rows: a modified copy of `current` (never `current`
    itself: readers in this process may be using it), a freshly trained IVF-PQ, or None when
    there is none (exact kind, or IVF-PQ still short of training data: searches stay exact)."""
    import faiss

    if kind == "exact":
        return None
    if current is not None:
        index = faiss.clone_index(current)
    elif kind == "hnsw":
        index = build("hnsw", dim, similarity, params)
    elif n_old + len(new) >= min_train_rows(params):
        everything = np.concatenate([old_vectors(), new]) if n_old else new
        sample = everything[np.random.default_rng(0).choice(len(everything), min(len(everything), 100_000), replace=False)]
        index = build("ivfpq", dim, similarity, params, train=sample)
        index.add(everything)
        return index
    else:
        return None
    index.add(np.ascontiguousarray(new, dtype=np.float32))
    return index


def load(path: Path):
    """Read a saved structure; FileNotFoundError when it is gone (a later commit replaced it)."""
    import faiss

    with open(path, "rb") as f:  # opened here, so a missing file is FileNotFoundError, not faiss's RuntimeError
        data = np.frombuffer(f.read(), dtype=np.uint8)
    return faiss.deserialize_index(data)


def save(index, path: Path) -> None:
    """Write `index` to `path` durably (the caller renames it into place or names it in a commit)."""
    import faiss

    from .store import fsync_file

    faiss.write_index(index, str(path))
    fsync_file(path)


def search(index, kind: str, queries: np.ndarray, k: int, params: AnnParams,
           deleted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FAISS search; returns (raw faiss distances, rows) with -1 rows where fewer were found."""
    import faiss

    sel = None
    keep = []
    if deleted is not None and deleted.any():
        dead = np.flatnonzero(deleted).astype(np.int64)
        inner = faiss.IDSelectorBatch(dead)
        sel = faiss.IDSelectorNot(inner)
        keep += [inner, dead]
    if kind == "hnsw":
        sp = faiss.SearchParametersHNSW(efSearch=max(params.ef_search, k))
    else:
        sp = faiss.SearchParametersIVF(nprobe=params.nprobe)
    if sel is not None:
        sp.sel = sel
    dist, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=sp)
    del keep
    return dist, rows
