"""Semantic textual similarity: rank correlation of model scores with human scores."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr

from ..vectors import SIMILARITIES, paired_scores, resolve_similarity
from .base import encode, similarity_name
from .readers import read_sts


class STSEvaluator:
    """Spearman and Pearson correlation per similarity (cosine, dot, euclidean, manhattan).

    Keys: "spearman_cosine", "pearson_cosine", ...; `primary_metric` is Spearman under the
    model's own similarity unless `main_similarity` says otherwise.

    >>> ev = STSEvaluator.from_file("../shared/data/stsb/sts-dev.csv")   # doctest: +SKIP
    >>> ev(sentembed.load("all-mpnet-base-v2"))["spearman_cosine"]       # doctest: +SKIP
    0.88109...
    """

    def __init__(self, sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float],
                 main_similarity: str | None = None, batch_size: int = 32, name: str = "sts",
                 show_progress: bool | None = None) -> None:
        if not (len(sentences1) == len(sentences2) == len(scores)):
            raise ValueError(f"lengths differ: {len(sentences1)} sentences1, {len(sentences2)} sentences2, {len(scores)} scores")
        if len(scores) < 2:
            raise ValueError("need at least 2 scored pairs for a correlation")
        if main_similarity is not None:
            main_similarity = resolve_similarity(main_similarity, "main_similarity")
        self.sentences1, self.sentences2 = list(sentences1), list(sentences2)
        self.scores = np.asarray(scores, dtype=np.float64)
        self.main_similarity = main_similarity
        self.primary_metric = f"spearman_{main_similarity or 'cosine'}"
        self.batch_size, self.name, self.show_progress = batch_size, name, show_progress

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> "STSEvaluator":
        a, b, s = read_sts(path)
        return cls(a, b, s, name=kw.pop("name", Path(path).stem), **kw)

    def __call__(self, enc: Any) -> dict[str, float]:
        if self.main_similarity is None:
            self.primary_metric = f"spearman_{similarity_name(enc)}"
        # Both sides encoded separately, as the reference evaluator does.
        e1 = encode(enc, self.sentences1, None, self.batch_size, self.show_progress).astype(np.float64)
        e2 = encode(enc, self.sentences2, None, self.batch_size, self.show_progress).astype(np.float64)
        out: dict[str, float] = {}
        for name in SIMILARITIES:
            pred = paired_scores(e1, e2, name)
            out[f"pearson_{name}"] = float(pearsonr(self.scores, pred)[0])
            out[f"spearman_{name}"] = float(spearmanr(self.scores, pred)[0])
        return out
