"""Similarity names, input checks and the chunk scorer shared by every search function.

Scores follow the model's similarity: "cosine" and "dot" are inner products (dot stays dot, it
is never normalized behind the caller's back); "euclidean" and "manhattan" are negative
distances, so that for every similarity a larger score means closer, as in sentence-transformers.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..model import SIMILARITY_FUNCTIONS as SIMILARITIES  # one list of names for the package


def resolve_similarity(score: Any = None) -> str:
    """Turn `score` (None, a similarity name, or an encoder) into a similarity name.

    None means cosine, the reference's behaviour; an encoder brings its own similarity.

    >>> resolve_similarity("dot")
    'dot'
    """
    if score is None:
        return "cosine"
    if not isinstance(score, str):
        name = getattr(score, "similarity_fn_name", None)
        if name is None:
            raise TypeError(
                f"score must be one of {SIMILARITIES}, an encoder with similarity_fn_name, or None; "
                f"got {type(score).__name__}"
            )
        score = name
    key = score.lower().replace("_similarity", "").replace("dot_product", "dot")
    key = {"cos": "cosine", "cos_sim": "cosine", "l2": "euclidean", "l1": "manhattan"}.get(key, key)
    if key not in SIMILARITIES:
        raise ValueError(f"unknown similarity {score!r}: use one of {', '.join(SIMILARITIES)}")
    return key


def as_matrix(x: Any, name: str, dim: int | None = None, check_finite: bool = True) -> torch.Tensor:
    """A 2-D float32 CPU tensor view of `x` (numpy, torch, memmap or nested lists).

    A 1-D input becomes one row. `check_finite` scans every value: cheap for queries, so the
    corpus is instead checked chunk by chunk through its scores (see `check_scores`).
    """
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu")
    else:
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"{name} must be a numeric matrix, got dtype {arr.dtype}")
        with warnings.catch_warnings():
            # Read-only memmaps are fine: nothing here writes into the caller's array.
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(arr)
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a vector or a matrix (rows = vectors), got shape {tuple(t.shape)}")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name} has dimension {t.shape[1]}, expected {dim}")
    if check_finite and t.numel() and not bool(torch.isfinite(t).all()):
        row = int((~torch.isfinite(t)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{name} row {row} contains NaN or infinity")
    return t


def _mm_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b.T


def _mm_onednn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # oneDNN's linear runs 1.3-1.8x faster than MKL's sgemm on AMD CPUs, in exact fp32.
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


def _pick_mm():
    try:
        a, b = torch.randn(3, 8), torch.randn(5, 8)
        if torch.allclose(_mm_onednn(a, b), a @ b.T, atol=1e-5):
            return _mm_onednn
    except (AttributeError, RuntimeError, NotImplementedError):
        pass
    return _mm_reference


matmul_t = _pick_mm()
"""`matmul_t(a, b) == a @ b.T` in fp32, through the fastest kernel this build has."""


def prepare_queries(q: torch.Tensor, similarity: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Queries made ready once: unit length for cosine, squared norms kept for euclidean."""
    q = q.contiguous()
    if similarity == "cosine":
        return torch.nn.functional.normalize(q, dim=1, eps=1e-12).contiguous(), None
    if similarity == "euclidean":
        return q, (q * q).sum(dim=1, keepdim=True)
    return q, None


def score_chunk(q: torch.Tensor, extra: torch.Tensor | None, c: torch.Tensor, similarity: str) -> torch.Tensor:
    """Scores (len(q), len(c)) of prepared queries against one corpus chunk."""
    c = c.contiguous()
    if similarity == "dot":
        return matmul_t(q, c)
    if similarity == "cosine":
        # Dividing by the corpus norms costs one pass over the chunk, cheaper than a
        # normalized copy of it (which is what the reference does).
        norms = torch.linalg.vector_norm(c, dim=1).clamp_min_(1e-12)
        return matmul_t(q, c).div_(norms)
    if similarity == "euclidean":
        sq = (c * c).sum(dim=1)
        d2 = matmul_t(q, c).mul_(-2).add_(extra).add_(sq).clamp_min_(0)
        return d2.sqrt_().neg_()
    if similarity == "manhattan":
        return torch.cdist(q, c, p=1).neg_()
    raise ValueError(f"unknown similarity {similarity!r}")


def pairwise(a: Any, b: Any, similarity: str = "cosine") -> np.ndarray:
    """Dense score matrix (len(a), len(b)) under `similarity`; for small inputs.

    >>> pairwise([[1.0, 0.0]], [[2.0, 0.0]], "dot").tolist()
    [[2.0]]
    """
    similarity = resolve_similarity(similarity)
    qa = as_matrix(a, "a")
    qb = as_matrix(b, "b", dim=qa.shape[1])
    q, extra = prepare_queries(qa, similarity)
    return score_chunk(q, extra, qb, similarity).numpy()
