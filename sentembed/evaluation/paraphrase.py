"""Paraphrase mining evaluation: average precision of mined pairs against known duplicates."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..vectors import topk
from .base import encode, similarity_name


class ParaphraseMiningEvaluator:
    """Mine each sentence's `top_k` neighbours, rank all pairs by score, and measure average
    precision against `duplicates` (pairs of ids); also the best F1 and its threshold.

    Keys: "average_precision", "f1", "precision", "recall", "threshold";
    `primary_metric` is "average_precision". Same definitions as the reference evaluator.
    """

    def __init__(self, sentences: Mapping[str, str], duplicates: Sequence[tuple[str, str]], top_k: int = 100,
                 max_pairs: int = 500_000, batch_size: int = 32, name: str = "paraphrase-mining",
                 show_progress: bool | None = None) -> None:
        if len(sentences) < 2:
            raise ValueError("need at least 2 sentences")
        if not duplicates:
            raise ValueError("no duplicate pairs given")
        self.ids = list(sentences)
        self.texts = [sentences[i] for i in self.ids]
        pos = {s: i for i, s in enumerate(self.ids)}
        self.duplicates: set[tuple[int, int]] = set()
        for a, b in duplicates:
            if a not in pos or b not in pos:
                raise ValueError(f"duplicate pair ({a!r}, {b!r}) names an unknown sentence id")
            if a != b:
                self.duplicates.add((min(pos[a], pos[b]), max(pos[a], pos[b])))
        self.top_k, self.max_pairs, self.batch_size = top_k, max_pairs, batch_size
        self.name, self.show_progress = name, show_progress
        self.primary_metric = "average_precision"

    def __call__(self, enc: Any) -> dict[str, float]:
        emb = encode(enc, self.texts, None, self.batch_size, self.show_progress)
        return self.evaluate_embeddings(emb, similarity_name(enc))

    def mine(self, emb: np.ndarray, similarity: str) -> list[tuple[float, int, int]]:
        n = len(emb)
        scores, idx = topk(emb, emb, min(self.top_k + 1, n), similarity)
        best: dict[tuple[int, int], float] = {}
        for i in range(n):
            kept = 0
            for s, j in zip(scores[i], idx[i]):
                if j == i or kept >= self.top_k:
                    continue
                kept += 1
                key = (min(i, int(j)), max(i, int(j)))
                best[key] = max(best.get(key, -np.inf), float(s))
        pairs = sorted(((s, a, b) for (a, b), s in best.items()), key=lambda x: (-x[0], x[1], x[2]))
        return pairs[: self.max_pairs]

    def evaluate_embeddings(self, emb: np.ndarray, similarity: str = "cosine") -> dict[str, float]:
        pairs = self.mine(emb, similarity)
        n_dup = len(self.duplicates)
        correct = 0
        ap = 0.0
        best = {"f1": 0.0, "precision": 0.0, "recall": 0.0, "threshold": 0.0}
        for rank, (score, a, b) in enumerate(pairs, 1):
            if (a, b) in self.duplicates:
                correct += 1
                ap += correct / rank
            prec, rec = correct / rank, correct / n_dup
            # A threshold sits between distinct scores: only judge F1 at the end of a tie run.
            if correct and (rank == len(pairs) or pairs[rank][0] != score):
                f1 = 2 * prec * rec / (prec + rec)
                if f1 > best["f1"]:
                    nxt = pairs[rank][0] if rank < len(pairs) else score
                    best = {"f1": f1, "precision": prec, "recall": rec, "threshold": (score + nxt) / 2}
        return {"average_precision": ap / n_dup, **best}
