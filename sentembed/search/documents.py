"""Checks on documents before they reach the index: texts, ids, JSON metadata and vectors.

Every error names the position of the offending item, so a bulk load can be fixed at once.
Given vectors are read a block at a time: a memory-mapped file larger than memory is read
once, never held whole.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Sequence

import numpy as np

from ..vectors import as_matrix

# Metadata nests at most this deep: deeper JSON is refused at the door, before it can make
# every later answer that carries it fail to serialise.
MAX_METADATA_DEPTH = 32
VECTOR_BLOCK = 65536  # given vectors checked and normalised at once (192 MiB of fp32 at 768 dimensions)


def check_documents(texts: Sequence[str], ids: Sequence[Any] | None,
                    metadata: Sequence[dict | None] | None) -> tuple[list[str], list[str] | None, list[str | None]]:
    """(texts, ids as strings or None, metadata as JSON strings or None), or a clear error.

    >>> check_documents(["a"], [7], [{"k": 1}])
    (['a'], ['7'], ['{"k": 1}'])
    """
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    n = len(texts)
    if ids is not None:
        ids = [str(i) if isinstance(i, (int, np.integer)) else i for i in ids]
        if len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} texts")
        for i, x in enumerate(ids):
            if not isinstance(x, str) or not x:
                raise TypeError(f"ids[{i}] must be a non-empty string, got {x!r}")
        if len(set(ids)) != n:
            dup = next(x for x in ids if ids.count(x) > 1)
            raise ValueError(f"id {dup!r} appears twice in this add")
    if metadata is not None and len(metadata) != n:
        raise ValueError(f"{len(metadata)} metadata entries for {n} texts")
    meta_json: list[str | None] = []
    for i, m in enumerate(metadata or [None] * n):
        if m is not None and not isinstance(m, dict):
            raise TypeError(f"metadata[{i}] must be a dict or None, got {type(m).__name__}")
        if m is not None and _depth(m) > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata[{i}] nests deeper than {MAX_METADATA_DEPTH} levels")
        try:
            meta_json.append(json.dumps(m, ensure_ascii=False, allow_nan=False) if m is not None else None)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata[{i}] is not JSON-serialisable: {e}") from None
    return texts, ids, meta_json


def _depth(value: Any) -> int:
    """How deep dicts and lists nest in `value` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else None
        if children is None:
            continue
        deepest = max(deepest, d)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        stack += [(c, d + 1) for c in children]
    return deepest


def check_vectors(vectors: Any, dim: int) -> Any:
    """`vectors` as a matrix of `dim` columns: a 2-D array or tensor as it is (a memory map
    stays one), anything else converted."""
    if getattr(vectors, "ndim", None) != 2:  # lists, or one vector
        return as_matrix(vectors, "vectors", dim=dim).numpy()
    if vectors.shape[1] != dim:
        raise ValueError(f"vectors has dimension {vectors.shape[1]}, expected {dim}")
    return vectors


def stored_form(v: np.ndarray, similarity: str) -> np.ndarray:
    # Cosine indexes keep unit vectors, so every later search is a plain inner product.
    if similarity == "cosine":
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(v, dtype=np.float32)


def stored_blocks(vectors: Any, similarity: str) -> Iterator[np.ndarray]:
    """The rows of `vectors` (from `check_vectors`) in their stored form, VECTOR_BLOCK at a
    time; a row with NaN or infinity is an error that names it."""
    for start in range(0, len(vectors), VECTOR_BLOCK):
        block = as_matrix(vectors[start : start + VECTOR_BLOCK], "vectors", check_finite=False).numpy()
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            raise ValueError(f"vectors row {start + int(np.flatnonzero(bad)[0])} contains NaN or infinity")
        yield stored_form(block, similarity)
