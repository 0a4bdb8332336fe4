"""A corpus ranked through a temporary `Index`: what users of the index get, for evaluation.

`sentembed eval retrieval --mode hybrid` (or `--rerank DIR`) hands an `IndexRetriever` to the
retrieval evaluator (the command line joins the two uses; evaluation does not import search).
Lexical search runs no model: with mode="lexical" the vectors are a constant stand-in, and the
encoder, if given, lends only its tokenizer and window, so the passages are those a real index
stores. With a reranker, each query's best `rerank_top_k` documents (default 100, the depth of
BEIR's reranking runs) are reordered by the cross-encoder, and the run holds those alone:
metrics past that depth count only them.

>>> run = IndexRetriever(mode="lexical")(None, {"q1": "cod"}, {"d1": "cod and herring", "d2": "stocks"}, k=10)
>>> list(run["q1"])
['d1']
"""
from __future__ import annotations

import tempfile
from typing import Any, Mapping

import numpy as np

from .fusion import check_mode
from .index import Index
from .rerank import RERANK_DEPTH, rerank_depth

BATCH = 1000  # documents a commit


class _NoModel:
    """One constant dimension: an index whose only signal is the lexical table; `like` lends
    its tokenizer, window and prompts for chunking."""

    name, dimension, similarity_fn_name, normalizes = "no-model", 1, "dot", False

    def __init__(self, like: Any = None) -> None:
        for attr in ("tokenizer", "max_seq_length", "prompts"):
            if getattr(like, attr, None) is not None:
                setattr(self, attr, getattr(like, attr))

    def encode(self, texts: Any, **_: Any) -> np.ndarray:
        return np.ones((1 if isinstance(texts, str) else len(texts), 1), dtype=np.float32)


class IndexRetriever:
    """`retriever(enc, queries, corpus, k) -> {query id: {doc id: score}}` through an `Index`
    built in a temporary directory with these settings; `rerank`: a cross-encoder that
    reorders each query's best `rerank_top_k` (its scores, or with `rerank_alpha` their blend with
    the search's, then are the run's)."""

    def __init__(self, mode: str = "hybrid", alpha: float | None = None, chunk_tokens: int | str | None = "auto",
                 chunk_overlap: int | None = None, show_progress: bool | None = None, rerank: Any = None,
                 rerank_top_k: int | None = None, rerank_alpha: float | None = None) -> None:
        check_mode(mode, alpha)
        # the reranker's label, depth and alpha, checked before any index is built
        rerank_depth(rerank, [], 1, rerank_top_k, alpha=rerank_alpha)
        self.rerank, self.rerank_top_k, self.rerank_alpha = rerank, rerank_top_k, rerank_alpha
        self.mode, self.alpha = mode, alpha
        self.chunk_tokens, self.chunk_overlap = chunk_tokens, chunk_overlap
        self.show_progress = show_progress

    def __call__(self, enc: Any, queries: Mapping[str, str], corpus: Mapping[str, str],
                 k: int) -> dict[str, dict[str, float]]:
        from tqdm import tqdm

        if self.mode == "lexical":
            enc = _NoModel(like=enc)
        elif enc is None:
            raise ValueError(f"mode={self.mode!r} needs a model; only mode='lexical' runs without one")
        chunking = {"chunk_tokens": self.chunk_tokens, "chunk_overlap": self.chunk_overlap}
        ids = list(corpus)
        with tempfile.TemporaryDirectory(prefix="sentembed-eval-") as tmp:
            index = Index.create(f"{tmp}/index", enc, **chunking)
            quiet = self.show_progress is False or (self.show_progress is None and len(ids) < BATCH)
            with tqdm(total=len(ids), desc="index", unit="doc", disable=quiet) as bar:
                for s in range(0, len(ids), BATCH):
                    part = ids[s : s + BATCH]
                    index.add([corpus[i] for i in part], ids=part)
                    bar.update(len(part))
            qids = list(queries)
            depth = None if self.rerank is None else self.rerank_top_k or RERANK_DEPTH
            hits = index.search_many([queries[q] for q in qids], top_k=min(k, depth or k), mode=self.mode,
                                     alpha=self.alpha, rerank=self.rerank, rerank_top_k=depth,
                                     rerank_alpha=self.rerank_alpha)
            index.close()
        return {q: {h.id: h.score for h in found} for q, found in zip(qids, hits)}
