"""What every evaluator shares: the call signature training relies on."""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Evaluator(Protocol):
    """`evaluator(enc) -> {metric: value}`; `primary_metric` names the one to maximise."""

    primary_metric: str

    def __call__(self, enc: Any) -> dict[str, float]: ...


def encode(enc: Any, texts: list[str], kind: str, batch_size: int, show_progress: bool | None) -> np.ndarray:
    """Encode with the model's query/document prompts when it has them; stand-ins only have encode."""
    fn = getattr(enc, f"encode_{kind}", None) if kind else None
    fn = fn or enc.encode
    try:
        out = fn(texts, batch_size=batch_size, show_progress=show_progress)
    except TypeError:  # a minimal encoder without these keywords
        out = fn(texts)
    arr = np.asarray(out, dtype=np.float32)
    if arr.ndim != 2 or len(arr) != len(texts):
        raise ValueError(f"encoder returned shape {arr.shape} for {len(texts)} texts")
    if not np.isfinite(arr).all():
        raise ValueError("encoder returned NaN or infinite embeddings")
    return arr


def similarity_name(enc: Any) -> str:
    return str(getattr(enc, "similarity_fn_name", None) or "cosine")


def paired_scores(a: np.ndarray, b: np.ndarray, name: str) -> np.ndarray:
    """Row-wise similarity of a[i] and b[i] under `name` (larger is closer)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if name == "cosine":
        na = np.maximum(np.linalg.norm(a64, axis=1), 1e-12)
        nb = np.maximum(np.linalg.norm(b64, axis=1), 1e-12)
        return (a64 * b64).sum(1) / (na * nb)
    if name == "dot":
        return (a64 * b64).sum(1)
    if name == "euclidean":
        return -np.linalg.norm(a64 - b64, axis=1)
    if name == "manhattan":
        return -np.abs(a64 - b64).sum(1)
    raise ValueError(f"unknown similarity {name!r}")


PAIRED = ("cosine", "dot", "euclidean", "manhattan")
