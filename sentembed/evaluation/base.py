"""What every evaluator shares: the call signature training relies on, and encoding."""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ..encoder import encode_as
from ..vectors import resolve_similarity


class Evaluator(Protocol):
    """`evaluator(enc) -> {metric: value}`; `primary_metric` names the one to maximise."""

    primary_metric: str

    def __call__(self, enc: Any) -> dict[str, float]: ...


def encode(enc: Any, texts: list[str], role: str | None, batch_size: int, show_progress: bool | None) -> np.ndarray:
    """Embed texts in a role ("query", "document" or None: the model's prompts) and check the result."""
    try:
        arr = encode_as(enc, texts, role, batch_size=batch_size, show_progress=show_progress)
    except TypeError:  # a minimal encoder without these keywords
        arr = encode_as(enc, texts, role)
    if arr.ndim != 2 or len(arr) != len(texts):
        raise ValueError(f"encoder returned shape {arr.shape} for {len(texts)} texts")
    if not np.isfinite(arr).all():
        raise ValueError("encoder returned NaN or infinite embeddings")
    return arr


def similarity_name(enc: Any) -> str:
    """The encoder's similarity; cosine for one that does not say."""
    return resolve_similarity(getattr(enc, "similarity_fn_name", None))
