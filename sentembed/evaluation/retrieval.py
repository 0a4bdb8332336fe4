"""Retrieval evaluation: embed queries and corpus, rank exactly (or through a given retriever,
such as a search index), score with trec_eval metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..vectors import topk
from .base import encode, similarity_name
from .metrics import retrieval_metrics
from .readers import read_beir


class RetrievalEvaluator:
    """nDCG@k, MRR@k, MAP@k, Recall@k, P@k and accuracy@k of a model on a retrieval task.

    Keys look like "ndcg@10", "mrr@10", "recall@100"; `primary_metric` is "ndcg@10".
    Queries are embedded with the model's query prompt, documents with its document prompt.
    `retriever(enc, queries, corpus, k) -> {query id: {doc id: score}}` replaces that exact
    ranking (sentembed.search.retriever.IndexRetriever measures what an index returns).

    >>> ev = RetrievalEvaluator.from_beir("../shared/data/scifact", split="test")  # doctest: +SKIP
    >>> ev(sentembed.load("all-mpnet-base-v2"))["ndcg@10"]                       # doctest: +SKIP
    0.6557...
    """

    def __init__(self, queries: Mapping[str, str], corpus: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                 k_values: Iterable[int] = (1, 3, 5, 10, 100, 1000), batch_size: int = 32,
                 score: str | None = None, ignore_identical_ids: bool = False, name: str = "retrieval",
                 show_progress: bool | None = None, primary_metric: str = "ndcg@10",
                 retriever: Callable[..., dict[str, dict[str, float]]] | None = None) -> None:
        if not corpus:
            raise ValueError("the corpus is empty")
        if not qrels:
            raise ValueError("no qrels: retrieval evaluation needs relevance judgements")
        missing = [q for q in qrels if q not in queries]
        if missing:
            raise ValueError(f"{len(missing)} judged queries have no text (e.g. {missing[0]!r})")
        self.queries = {q: queries[q] for q in qrels}
        self.corpus = dict(corpus)
        self.qrels = {q: dict(v) for q, v in qrels.items()}
        self.k_values = sorted(set(k_values))
        if not self.k_values or self.k_values[0] <= 0:
            raise ValueError("k_values must be positive")
        self.batch_size, self.score, self.name = batch_size, score, name
        self.ignore_identical_ids, self.show_progress = ignore_identical_ids, show_progress
        self.primary_metric = primary_metric
        self.retriever = retriever
        self.last_run: dict[str, dict[str, float]] = {}
        self.last_embeddings: tuple = ()

    @classmethod
    def from_beir(cls, folder: str | Path, split: str = "test", **kw: Any) -> "RetrievalEvaluator":
        data = read_beir(folder, split)
        return cls(data.queries, data.corpus, data.qrels, name=kw.pop("name", f"{Path(folder).name}-{split}"), **kw)

    def __call__(self, enc: Any) -> dict[str, float]:
        if self.retriever is not None:
            k = max(self.k_values) + (1 if self.ignore_identical_ids else 0)
            run = self.retriever(enc, self.queries, self.corpus, k)
            if self.ignore_identical_ids:
                run = {q: {d: s for d, s in hits.items() if d != q} for q, hits in run.items()}
            self.last_run = run
            return retrieval_metrics(run, self.qrels, self.k_values)
        qids, dids = list(self.queries), list(self.corpus)
        q = encode(enc, [self.queries[i] for i in qids], "query", self.batch_size, self.show_progress)
        c = encode(enc, [self.corpus[i] for i in dids], "document", self.batch_size, self.show_progress)
        self.last_embeddings = (q, c)
        return self.evaluate_embeddings(q, c, self.score or similarity_name(enc), qids, dids)

    def evaluate_embeddings(self, q, c, similarity: str, qids: list[str] | None = None,
                            dids: list[str] | None = None) -> dict[str, float]:
        """Metrics from precomputed query and corpus embeddings (rows in dict order)."""
        qids = qids or list(self.queries)
        dids = dids or list(self.corpus)
        # One extra candidate so that dropping a document with the query's own id keeps k.
        k = max(self.k_values) + (1 if self.ignore_identical_ids else 0)
        scores, idx = topk(q, c, k, similarity)
        run: dict[str, dict[str, float]] = {}
        for qi, qid in enumerate(qids):
            hits = {dids[j]: float(s) for s, j in zip(scores[qi], idx[qi])}
            if self.ignore_identical_ids:
                hits.pop(qid, None)
            run[qid] = hits
        self.last_run = run
        return retrieval_metrics(run, self.qrels, self.k_values)
