"""Exact top-k for evaluators (evaluation does not import search, by the layering rule).

Plain chunked torch matrix products: the corpora of evaluation sets are small next to what
`sentembed.search` is built for, so simplicity wins here.
"""
from __future__ import annotations

import numpy as np
import torch


def score_matrix(q: torch.Tensor, c: torch.Tensor, name: str) -> torch.Tensor:
    """(len(q), len(c)) scores, larger is closer."""
    if name == "cosine":
        q = torch.nn.functional.normalize(q, dim=1, eps=1e-12)
        c = torch.nn.functional.normalize(c, dim=1, eps=1e-12)
        return q @ c.T
    if name == "dot":
        return q @ c.T
    if name == "euclidean":
        return -torch.cdist(q, c, p=2)
    if name == "manhattan":
        return -torch.cdist(q, c, p=1)
    raise ValueError(f"unknown similarity {name!r}")


def topk(queries: np.ndarray, corpus: np.ndarray, k: int, name: str,
         query_chunk: int = 256, corpus_chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices), each (len(queries), min(k, len(corpus))), best first."""
    if len(corpus) == 0:
        raise ValueError("the corpus is empty")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    k = min(k, len(corpus))
    q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    c_all = torch.from_numpy(np.ascontiguousarray(corpus, dtype=np.float32))
    out_s, out_i = [], []
    for qs in range(0, len(q_all), query_chunk):
        q = q_all[qs : qs + query_chunk]
        best_s = best_i = None
        for cs in range(0, len(c_all), corpus_chunk):
            s = score_matrix(q, c_all[cs : cs + corpus_chunk], name)
            v, i = torch.topk(s, min(k, s.shape[1]), dim=1)
            i = i + cs
            if best_s is not None:
                v, i = torch.cat([best_s, v], 1), torch.cat([best_i, i], 1)
                v, pos = torch.topk(v, k, dim=1)
                i = torch.gather(i, 1, pos)
            best_s, best_i = v, i
        out_s.append(best_s)
        out_i.append(best_i)
    return torch.cat(out_s).numpy(), torch.cat(out_i).numpy()
