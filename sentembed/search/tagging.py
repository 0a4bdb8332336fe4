"""Concept tagging: the concepts (glossary terms, labels) that best describe each passage."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


from .exact import topk_blocks
from .mining import embed_if_texts
from ..vectors import as_matrix, resolve_similarity


@dataclass(frozen=True)
class Tag:
    """A concept chosen for a passage: its text (or None for vectors), position and score."""

    concept: str | None
    index: int
    score: float


def tag(
    passages: Sequence[str] | np.ndarray,
    concepts: Sequence[str] | np.ndarray,
    top_k: int = 5,
    *,
    encoder: Any = None,
    score: Any = None,
    threshold: float | None = None,
) -> list[list[Tag]]:
    """The `top_k` best concepts for every passage, best first, with scores.

    Passages are embedded as queries and concepts as documents (models with prompts differ);
    either may also be given as embedding matrices. The score is `score`, else the encoder's
    similarity, else cosine; concepts under `threshold` are left out.

    >>> enc = sentembed.load("all-mpnet-base-v2")                          # doctest: +SKIP
    >>> tag(["Neurons fire action potentials."], ["neuron", "acid"], 1, encoder=enc)[0][0].concept  # doctest: +SKIP
    'neuron'
    """
    if int(top_k) != top_k or top_k <= 0:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if len(concepts) == 0:
        raise ValueError("no concepts to tag with")
    similarity = resolve_similarity(score if score is not None else encoder)
    names = list(concepts) if isinstance(concepts, (list, tuple)) and isinstance(concepts[0], str) else None
    c = as_matrix(embed_if_texts(concepts, encoder, "concepts", "document"), "concepts")
    if len(passages) == 0:
        return []
    p = as_matrix(embed_if_texts(passages, encoder, "passages", "query"), "passages", dim=c.shape[1])
    res = topk_blocks(p, [(0, c)], int(top_k), similarity, len(c))
    out: list[list[Tag]] = []
    for srow, irow in zip(res.scores, res.indices):
        out.append([Tag(names[i] if names else None, int(i), float(s))
                    for s, i in zip(srow, irow) if threshold is None or s >= threshold])
    return out


