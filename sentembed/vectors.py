"""Similarity by name, scores and exact top-k: the one home of these for every use.

Scores follow sentence-transformers: higher means more similar for every similarity, so
"euclidean" and "manhattan" are negated distances; "dot" stays dot and is never normalized
behind the caller's back.

    >>> pairwise_scores([[1.0, 0.0]], [[2.0, 0.0], [0.0, 1.0]], "dot").tolist()
    [[2.0, 0.0]]
    >>> paired_scores([[3.0, 4.0]], [[0.0, 0.0]], "euclidean").tolist()
    [-5.0]
    >>> resolve_similarity("cos_sim")
    'cosine'
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")
# Other spellings in use (sentence-transformers' function names among them), after a
# trailing "_similarity" is dropped: "cos_sim", "dot_score", "dot_product_similarity".
ALIASES = {"cos": "cosine", "cos_sim": "cosine", "dot_product": "dot", "dot_score": "dot",
           "l2": "euclidean", "l1": "manhattan"}


def resolve_similarity(score: Any = None, source: str | None = None) -> str:
    """The similarity name `score` stands for: None means cosine, an encoder brings its own
    `similarity_fn_name`, a string may be an alias. `source` prefixes the error (a file name).

    >>> resolve_similarity(None), resolve_similarity("L2"), resolve_similarity("dot_product")
    ('cosine', 'euclidean', 'dot')
    """
    if score is None:
        return "cosine"
    if not isinstance(score, str):
        name = getattr(score, "similarity_fn_name", None)
        if not isinstance(name, str):
            raise TypeError(f"score must be one of {', '.join(SIMILARITIES)}, an encoder with "
                            f"similarity_fn_name, or None; got {type(score).__name__}")
        score = name
    key = score.lower().removesuffix("_similarity")
    key = ALIASES.get(key, key)
    if key not in SIMILARITIES:
        where = f"{source}: " if source else ""
        raise ValueError(f"{where}unknown similarity {score!r}; valid: {', '.join(SIMILARITIES)}")
    return key


def _from_array(x: Any, name: str) -> torch.Tensor:
    """A tensor sharing memory with a NumPy array (or made from nested lists); numbers only."""
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be a numeric matrix, got dtype {arr.dtype}")
    with warnings.catch_warnings():
        # Read-only memmaps are fine: nothing here writes into the caller's array.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def as_matrix(x: Any, name: str, dim: int | None = None, check_finite: bool = True) -> torch.Tensor:
    """A 2-D float32 CPU tensor view of `x` (numpy, torch, memmap or nested lists).

    A 1-D input becomes one row. `check_finite` scans every value: cheap for queries, so the
    search functions check a corpus chunk by chunk through its scores instead.
    """
    t = x.detach().to("cpu") if isinstance(x, torch.Tensor) else _from_array(x, name)
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


def _mm_onednn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # oneDNN's linear runs 1.3-1.8x faster than MKL's sgemm on AMD CPUs, in exact fp32.
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


def _onednn_works() -> bool:
    try:
        a, b = torch.randn(3, 8), torch.randn(5, 8)
        return torch.allclose(_mm_onednn(a, b), a @ b.T, atol=1e-5)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


_ONEDNN = _onednn_works()


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def matmul_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a @ b.T`, through the fastest exact kernel this build has for CPU float32 without
    gradients (oneDNN); anything else (other dtypes, GPUs, autograd) takes `a @ b.T`."""
    if (_ONEDNN and a.dtype == b.dtype == torch.float32 and a.device.type == b.device.type == "cpu"
            and not _needs_grad(a, b)):
        return _mm_onednn(a.contiguous(), b.contiguous())
    return a @ b.T


def prepare_queries(q: torch.Tensor, similarity: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Queries made ready once for many `score_chunk` calls: unit length for cosine,
    squared norms kept for euclidean."""
    q = q.contiguous()
    if similarity == "cosine":
        return torch.nn.functional.normalize(q, dim=1, eps=1e-12).contiguous(), None
    if similarity == "euclidean":
        return q, (q * q).sum(dim=1, keepdim=True)
    return q, None


def score_chunk(q: torch.Tensor, extra: torch.Tensor | None, c: torch.Tensor, similarity: str) -> torch.Tensor:
    """Scores (len(q), len(c)) of prepared queries (`prepare_queries`) against corpus rows `c`.

    Without gradients the score matrix is reworked in place, so a scan makes one buffer a
    step; under autograd (training) every step makes a new tensor, as autograd needs.
    """
    c = c.contiguous()
    if similarity == "dot":
        return matmul_t(q, c)
    in_place = not _needs_grad(q, c)
    if similarity == "cosine":
        # Dividing by the corpus norms costs one pass over the chunk, cheaper than a
        # normalized copy of it (which is what the reference does).
        norms = torch.linalg.vector_norm(c, dim=1).clamp_min(1e-12)
        scores = matmul_t(q, c)
        return scores.div_(norms) if in_place else scores / norms
    if similarity == "euclidean" and in_place:
        sq = (c * c).sum(dim=1)
        d2 = matmul_t(q, c).mul_(-2).add_(extra).add_(sq).clamp_min_(0)
        return d2.sqrt_().neg_()
    if similarity in ("euclidean", "manhattan"):
        # torch's cdist: its gradient stays finite where two rows are equal.
        return -torch.cdist(q, c, p=2.0 if similarity == "euclidean" else 1.0)
    raise ValueError(f"unknown similarity {similarity!r}; valid: {', '.join(SIMILARITIES)}")


def _pair(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """a and b as 2-D float tensors of one dtype, and whether to answer in torch."""
    as_torch = isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)
    ta, tb = (x if isinstance(x, torch.Tensor) else _from_array(x, name) for x, name in ((a, "a"), (b, "b")))
    # float64 stays float64 (evaluation, references); everything else is scored in float32.
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    dtype = dtype if dtype.is_floating_point and (as_torch or dtype == torch.float64) else torch.float32
    ta, tb = (t.to(dtype).unsqueeze(0) if t.ndim == 1 else t.to(dtype) for t in (ta, tb))
    if ta.ndim != 2 or tb.ndim != 2:
        raise ValueError(f"scores need vectors or matrices, got shapes {tuple(ta.shape)} and {tuple(tb.shape)}")
    if ta.shape[1] != tb.shape[1]:
        raise ValueError(f"dimension mismatch: {ta.shape[1]} vs {tb.shape[1]}")
    return ta, tb, as_torch


def pairwise_scores(a: Any, b: Any, similarity: str = "cosine") -> Any:
    """Scores (len(a), len(b)) of every row of `a` against every row of `b`.

    Tensors in, a tensor out (same dtype and device; gradients flow, for losses). Otherwise
    NumPy out: float64 when an input is float64, else float32.

    >>> pairwise_scores(np.eye(2), np.eye(2), "cosine").tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    name = resolve_similarity(similarity)
    ta, tb, as_torch = _pair(a, b)
    q, extra = prepare_queries(ta, name)
    scores = score_chunk(q, extra, tb, name)
    return scores if as_torch else scores.numpy()


def paired_scores(a: Any, b: Any, similarity: str = "cosine") -> Any:
    """Scores (n,) of row i of `a` with row i of `b`; types as in `pairwise_scores`.

    >>> paired_scores([[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [2.0, 2.0]], "cosine").round(6).tolist()
    [0.0, 1.0]
    """
    name = resolve_similarity(similarity)
    ta, tb, as_torch = _pair(a, b)
    if ta.shape != tb.shape:
        raise ValueError(f"paired scores need as many rows in a as in b, got {len(ta)} and {len(tb)}")
    if name == "cosine":
        ta = torch.nn.functional.normalize(ta, dim=1, eps=1e-12)
        tb = torch.nn.functional.normalize(tb, dim=1, eps=1e-12)
    if name in ("cosine", "dot"):
        scores = (ta * tb).sum(dim=1)
    else:
        scores = -torch.linalg.vector_norm(ta - tb, ord=2 if name == "euclidean" else 1, dim=1)
    return scores if as_torch else scores.numpy()


def topk(queries: Any, corpus: Any, k: int, similarity: str = "cosine", *,
         query_chunk: int = 256, corpus_chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact best `k` corpus rows per query, the plain way: (scores, indices), each
    (len(queries), min(k, len(corpus))), best first; equal scores keep the lower row first.

    Whole score blocks in memory: for evaluation sets and references. `sentembed.search`
    scans large and memory-mapped corpora within a memory bound.

    >>> topk(np.eye(3), np.eye(3), 1)[1].tolist()
    [[0], [1], [2]]
    """
    name = resolve_similarity(similarity)
    if len(corpus) == 0:
        raise ValueError("the corpus is empty")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    queries, corpus = np.asarray(queries), np.asarray(corpus)
    k = min(k, len(corpus))
    out_s, out_i = [np.zeros((0, k), np.float32)], [np.zeros((0, k), np.int64)]
    for qs in range(0, len(queries), query_chunk):
        q = queries[qs : qs + query_chunk]
        best_s = best_i = None
        for cs in range(0, len(corpus), corpus_chunk):
            s = pairwise_scores(q, corpus[cs : cs + corpus_chunk], name)
            i = np.broadcast_to(np.arange(cs, cs + s.shape[1]), s.shape)
            if best_s is not None:  # the best so far come first: ties keep the lower row
                s, i = np.concatenate([best_s, s], 1), np.concatenate([best_i, i], 1)
            order = _best_columns(s, k)
            best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
        out_s.append(best_s)
        out_i.append(best_i)
    return np.concatenate(out_s), np.concatenate(out_i).astype(np.int64)


def _best_columns(s: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of its k largest values, largest first, equal values in column
    order: what a stable sort of -s gives, with a selection first (a full sort of 50,000
    columns a row was most of a mining run's time)."""
    if s.shape[1] <= k or np.isnan(s).any():
        return np.argsort(-s, axis=1, kind="stable")[:, :k]
    kth = torch.topk(torch.from_numpy(s), k, dim=1).values[:, -1:].numpy()   # each row's k-th largest
    mask, equal = s > kth, s == kth
    short = k - mask.sum(axis=1)
    tied = np.nonzero(equal.sum(axis=1) > short)[0]   # rows with more values equal to the k-th than room
    mask |= equal
    if len(tied):  # of those, the first columns fill the row up to k
        mask[tied] &= ~equal[tied] | (np.cumsum(equal[tied], axis=1) <= short[tied, None])
    cols = np.nonzero(mask)[1].reshape(len(s), k)   # k a row, in column order
    return np.take_along_axis(cols, np.argsort(-np.take_along_axis(s, cols, 1), axis=1, kind="stable"), 1)
