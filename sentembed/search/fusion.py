"""Hybrid ranking: one list of documents from a dense and a lexical ranked list.

Reciprocal-rank fusion (the default) scores a document by sum(1 / (k + rank)) over the lists
it is in (k = 60, rank from 1): only ranks count, so BM25's unbounded scores and cosine
similarities need no common scale. With `alpha` in [0, 1], each list's scores are min-max
normalised to [0, 1] instead and summed with weights alpha (dense) and 1 - alpha (lexical);
a document absent from a list counts 0 there, and reciprocal rank breaks ties.

>>> rrf([("a", 0.9), ("b", 0.8)], [("b", 12.0), ("c", 3.0)])
[('b', 0.03252247488101534), ('a', 0.01639344262295082), ('c', 0.016129032258064516)]
>>> weighted([("a", 0.9), ("b", 0.8)], [("b", 12.0), ("c", 3.0)], alpha=0.5)
[('a', 0.5), ('b', 0.5), ('c', 0.0)]
"""
from __future__ import annotations

from typing import Hashable, Sequence

MODES = ("dense", "lexical", "hybrid")
RRF_K = 60

Ranked = Sequence[tuple[Hashable, float]]  # (key, score), best first


def check_weight(value: float, name: str, of: str) -> None:
    """A clear error for a weight that is not a number in [0, 1]; `of`: what it weighs."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] ({of}), got {value!r}")


def check_mode(mode: str, alpha: float | None) -> None:
    """A clear error for an unknown mode or an alpha outside [0, 1]."""
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r}; valid modes: {', '.join(MODES)}")
    if alpha is not None:
        check_weight(alpha, "alpha", "the dense list's weight")
        if mode != "hybrid":
            raise ValueError(f"alpha weighs the two lists of mode='hybrid'; it means nothing for mode={mode!r}")


def rrf(dense: Ranked, lexical: Ranked, k: int = RRF_K) -> list[tuple[Hashable, float]]:
    """Reciprocal-rank fusion of two ranked lists, best first (ties: the order first seen)."""
    scores: dict[Hashable, float] = {}
    for ranked in (dense, lexical):
        for rank, (key, _) in enumerate(ranked, 1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def weighted(dense: Ranked, lexical: Ranked, alpha: float) -> list[tuple[Hashable, float]]:
    """alpha * dense + (1 - alpha) * lexical, each min-max normalised over its list; absent counts 0."""
    scores: dict[Hashable, float] = {}
    for ranked, weight in ((dense, float(alpha)), (lexical, 1.0 - float(alpha))):
        if not ranked:
            continue
        values = [s for _, s in ranked]
        lo, span = min(values), max(values) - min(values)
        for key, s in ranked:
            norm = (s - lo) / span if span > 0 else 1.0
            scores[key] = scores.get(key, 0.0) + weight * norm
    # A list's last document normalises to 0, as an absent one does: rank breaks such ties.
    ranks = dict(rrf(dense, lexical))
    return sorted(scores.items(), key=lambda kv: (-kv[1], -ranks[kv[0]]))
