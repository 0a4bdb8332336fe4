"""Ranking metrics with trec_eval's (and so pytrec_eval's) definitions.

- ranking: score descending, ties by document id descending (trec_eval's order);
- relevant: grade >= 1; nDCG gain is the grade itself, discount log2(rank + 1), ideal DCG from
  the judged grades, both cut at k (`ndcg_cut_k`);
- MAP@k: sum of precision at each relevant document in the top k / all relevant (`map_cut_k`);
- Recall@k: relevant in the top k / all relevant (`recall_k`); P@k divides by k (`P_k`);
- MRR@k: 1 / rank of the first relevant document in the top k (BEIR's and MTEB's MRR@k);
- accuracy@k: 1 when any relevant document is in the top k.
Means are over the judged queries; a judged query missing from the run scores 0.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

METRICS = ("ndcg", "mrr", "map", "recall", "precision", "accuracy")


def rank(scores: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval order: score descending, then id descending."""
    return [d for d, _ in sorted(scores.items(), key=lambda x: (-x[1], _Desc(x[0])))]


class _Desc:
    """Sort key inverting string order, so ties fall in descending id order."""

    __slots__ = ("s",)

    def __init__(self, s: str) -> None:
        self.s = s

    def __lt__(self, other: "_Desc") -> bool:
        return self.s.encode() > other.s.encode()  # trec_eval compares bytes (strcmp)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.s == other.s


def query_metrics(ranked: Sequence[str], judged: Mapping[str, int], k_values: Iterable[int]) -> dict[str, float]:
    """All metrics for one query: `ranked` doc ids best first, `judged` doc id -> grade.

    >>> query_metrics(["a", "b"], {"b": 1}, [1, 2])["mrr@2"]
    0.5
    """
    rel = [judged.get(d, 0) for d in ranked]
    n_rel = sum(1 for g in judged.values() if g >= 1)
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)
    out: dict[str, float] = {}
    for k in k_values:
        top = rel[:k]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(top) if g > 0)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
        hits = 0
        ap = 0.0
        first = 0
        for i, g in enumerate(top):
            if g >= 1:
                hits += 1
                ap += hits / (i + 1)
                if not first:
                    first = i + 1
        out[f"map@{k}"] = ap / n_rel if n_rel else 0.0
        out[f"recall@{k}"] = hits / n_rel if n_rel else 0.0
        out[f"precision@{k}"] = hits / k
        out[f"mrr@{k}"] = 1.0 / first if first else 0.0
        out[f"accuracy@{k}"] = 1.0 if hits else 0.0
    return out


def retrieval_metrics(run: Run, qrels: Qrels, k_values: Iterable[int] = (1, 3, 5, 10, 100, 1000),
                      per_query: bool = False) -> dict:
    """Mean metrics of a run (qid -> {doc id: score}) against qrels (qid -> {doc id: grade}).

    Returns {"ndcg@10": ..., "mrr@10": ..., ...}; with `per_query`, also "per_query": {qid: {...}}.

    >>> retrieval_metrics({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, [1])["recall@1"]
    0.0
    """
    if not qrels:
        raise ValueError("qrels are empty: nothing to evaluate against")
    ks = sorted(set(int(k) for k in k_values))
    if not ks or ks[0] <= 0:
        raise ValueError(f"k values must be positive, got {ks}")
    per: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        per[qid] = query_metrics(rank(run.get(qid, {})), judged, ks)
    names = list(next(iter(per.values())).keys())
    mean = {m: sum(p[m] for p in per.values()) / len(per) for m in names}
    if per_query:
        mean["per_query"] = per  # type: ignore[assignment]
    return mean
