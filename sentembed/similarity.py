"""Pairwise similarity by name, with the reference's signs: higher means more similar.

    pairwise(a, b, "cosine")     # (len(a), len(b))
"""
from __future__ import annotations

import numpy as np
import torch

from .model import check_similarity_name


def _as_matrix(x) -> torch.Tensor:
    tensor = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if not tensor.is_floating_point():
        raise TypeError(f"similarity needs float embeddings, got {tensor.dtype}")
    return tensor.float().reshape(1, -1) if tensor.ndim == 1 else tensor.float()


def pairwise(a, b, name: str = "cosine") -> np.ndarray:
    check_similarity_name(name)
    a, b = _as_matrix(a), _as_matrix(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dimension mismatch: {a.shape[1]} vs {b.shape[1]}")
    if name == "cosine":
        scores = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    elif name == "dot":
        scores = a @ b.T
    elif name == "euclidean":
        scores = -torch.cdist(a, b, p=2.0)
    else:
        scores = -torch.cdist(a, b, p=1.0)
    return scores.numpy()
