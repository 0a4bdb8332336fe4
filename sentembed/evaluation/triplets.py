"""Triplet accuracy: how often the anchor is closer to its positive than to its negative."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..vectors import SIMILARITIES, paired_scores
from .base import encode, similarity_name
from .readers import read_triplets


class TripletEvaluator:
    """Accuracy per similarity: keys "cosine_accuracy", "dot_accuracy", "euclidean_accuracy",
    "manhattan_accuracy"; `primary_metric` is the model's similarity's accuracy.

    A tie counts as a miss (strictly closer to the positive is required), as in the reference.

    >>> ev = TripletEvaluator([("a cat", "a kitten", "stock prices")])     # doctest: +SKIP
    """

    def __init__(self, triplets: Sequence[tuple[str, str, str]], batch_size: int = 32, name: str = "triplets",
                 main_similarity: str | None = None, show_progress: bool | None = None) -> None:
        if not triplets:
            raise ValueError("no triplets to evaluate")
        for i, t in enumerate(triplets):
            if len(t) != 3 or not all(isinstance(x, str) for x in t):
                raise ValueError(f"triplets[{i}] must be (anchor, positive, negative) strings")
        self.anchors = [t[0] for t in triplets]
        self.positives = [t[1] for t in triplets]
        self.negatives = [t[2] for t in triplets]
        self.main_similarity = main_similarity
        self.primary_metric = f"{main_similarity or 'cosine'}_accuracy"
        self.batch_size, self.name, self.show_progress = batch_size, name, show_progress

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> "TripletEvaluator":
        return cls(read_triplets(path), name=kw.pop("name", Path(path).stem), **kw)

    def __call__(self, enc: Any) -> dict[str, float]:
        if self.main_similarity is None:
            self.primary_metric = f"{similarity_name(enc)}_accuracy"
        # Scored in float64, so that near-ties are decided the same way on every machine.
        a = encode(enc, self.anchors, "query", self.batch_size, self.show_progress).astype(np.float64)
        p = encode(enc, self.positives, "document", self.batch_size, self.show_progress).astype(np.float64)
        n = encode(enc, self.negatives, "document", self.batch_size, self.show_progress).astype(np.float64)
        return {f"{name}_accuracy": float(np.mean(paired_scores(a, p, name) > paired_scores(a, n, name)))
                for name in SIMILARITIES}
