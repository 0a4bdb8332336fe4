"""Reranked search: the hits a search retrieves, reordered by a cross-encoder's scores of
(query, matched passage). The reference is sentence-transformers' CrossEncoder scoring the
same retrieved passages; the models are tiny and random (support.py)."""
from __future__ import annotations

import numpy as np
import pytest
from support import build_cross_encoder

import sentembed
from sentembed.search import Index
from sentembed.search.rerank import RERANK_DEPTH

st = pytest.importorskip("sentence_transformers")

DOCS = ["a man is eating food", "a man is eating a meal", "the dog runs in the park", "stocks fell today",
        "a woman plays the guitar", "children playing in the park with a ball", "interest rates rose today",
        "a cat sits on the table in the small red house"]
META = [{"t": "food"}, {"t": "food"}, {"t": "pets"}, {"t": "money"}, {"t": "music"}, {"t": "pets"},
        {"t": "money"}, {"t": "pets"}]
QUERIES = ["a man eating", "the market fell today", "a dog in the park"]
LONG = " ".join(["the market said the bank rates rose"] * 12) + " a small dog runs in the park with a ball"


class Spy:
    """A reranker that records what it was asked to score, then asks the real one."""

    def __init__(self, reranker) -> None:
        self.reranker, self.calls = reranker, []
        self.num_labels, self.labels = reranker.num_labels, reranker.labels

    def predict(self, pairs, **kwargs):
        self.calls.append(list(pairs))
        return self.reranker.predict(pairs, **kwargs)


@pytest.fixture(scope="module")
def ce_path(tmp_path_factory):
    return build_cross_encoder(tmp_path_factory.mktemp("ce"))


@pytest.fixture(scope="module")
def reranker(ce_path):
    return sentembed.load_cross_encoder(ce_path, device="cpu")


@pytest.fixture(scope="module")
def reference(ce_path):
    return st.CrossEncoder(str(ce_path), device="cpu")


@pytest.fixture(scope="module")
def index(tiny_model, tmp_path_factory):
    enc = sentembed.load(str(tiny_model), device="cpu")
    idx = Index.create(tmp_path_factory.mktemp("ix") / "index", enc, chunk_tokens=16, chunk_overlap=4)
    idx.add([*DOCS, LONG], ids=[f"d{i}" for i in range(len(DOCS))] + ["long"], metadata=[*META, {"t": "money"}])
    assert len(idx.chunk([LONG])[0]) > 2
    return idx


def expected(reference, queries, retrieved, top_k):
    """The reference's order and scores over the retrieved passages, best first."""
    out = []
    for query, hits in zip(queries, retrieved):
        scores = reference.predict([(query, h.passage) for h in hits])
        order = np.argsort(-scores, kind="stable")[:top_k]
        out.append([(hits[i].id, float(scores[i])) for i in order])
    return out


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_reranked_order_and_scores_are_the_reference_cross_encoders(index, reranker, reference, mode):
    retrieved = index.search_many(QUERIES, top_k=6, mode=mode)
    spy = Spy(reranker)
    got = index.search_many(QUERIES, top_k=3, mode=mode, rerank=spy, rerank_top_k=6)
    assert len(spy.calls) == 1 and len(spy.calls[0]) == sum(len(h) for h in retrieved)  # one batch for all queries
    assert [[h.id for h in hits] for hits in got] != [[h.id for h in hits[:3]] for hits in retrieved]  # it reorders
    for hits, want in zip(got, expected(reference, QUERIES, retrieved, 3)):
        assert [h.id for h in hits] == [i for i, _ in want]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in want], atol=1e-5)
    one = index.search(QUERIES[1], top_k=3, mode=mode, rerank=reranker, rerank_top_k=6)
    assert [(h.id, h.passage) for h in one] == [(h.id, h.passage) for h in got[1]]


def test_default_depth_reranks_the_best_hundred(index, reranker, reference):
    spy = Spy(reranker)
    got = index.search("a dog in the park", top_k=2, rerank=spy)
    assert len(spy.calls[0]) == min(RERANK_DEPTH, len(index))  # every document of this small index
    retrieved = index.search_many(["a dog in the park"], top_k=RERANK_DEPTH)
    assert [(h.id, pytest.approx(h.score, abs=1e-5)) for h in got] == expected(reference, ["a dog in the park"],
                                                                                retrieved, 2)[0]


def test_a_chunked_document_is_reranked_on_the_passage_that_matched(index, reranker, reference):
    spy = Spy(reranker)
    query = "a small dog runs with a ball"
    hits = index.search(query, top_k=len(DOCS) + 1, mode="lexical", rerank=spy, rerank_top_k=len(DOCS) + 1)
    long = next(h for h in hits if h.id == "long")
    assert long.passage != LONG and long.passage == LONG[long.span[0]:long.span[1]] and "dog" in long.passage
    asked = dict(zip((h.id for h in index.search(query, top_k=len(DOCS) + 1, mode="lexical")), spy.calls[0]))
    assert asked["long"] == (query, long.passage)
    assert all(pair[0] == query for pair in spy.calls[0])
    assert long.score == pytest.approx(float(reference.predict([(query, long.passage)])[0]), abs=1e-5)


def test_where_filters_before_reranking(index, reranker, reference):
    where = {"t": {"$in": ["pets", "money"]}}
    got = index.search_many(QUERIES, top_k=3, where=where, rerank=reranker, rerank_top_k=5)
    retrieved = index.search_many(QUERIES, top_k=5, where=where)
    allowed = {f"d{i}" for i, m in enumerate(META) if m["t"] in ("pets", "money")} | {"long"}
    for hits, want in zip(got, expected(reference, QUERIES, retrieved, 3)):
        assert {h.id for h in hits} <= allowed
        assert [h.id for h in hits] == [i for i, _ in want]


def test_a_multi_label_reranker_needs_a_label(index, tmp_path):
    path = build_cross_encoder(tmp_path, num_labels=3)
    three = sentembed.load_cross_encoder(path, device="cpu")
    with pytest.raises(ValueError, match="rerank_label.*3 labels.*entailment"):
        index.search("a man eating", top_k=2, rerank=three)
    with pytest.raises(ValueError, match="rerank_label='maybe'"):
        index.search("a man eating", top_k=2, rerank=three, rerank_label="maybe")
    retrieved = index.search("a man eating", top_k=4)
    ref = st.CrossEncoder(str(path), device="cpu").predict([("a man eating", h.passage) for h in retrieved])[:, 1]
    got = index.search("a man eating", top_k=2, rerank=three, rerank_top_k=4, rerank_label="entailment")
    assert [h.id for h in got] == [retrieved[i].id for i in np.argsort(-ref, kind="stable")[:2]]
    assert got == index.search("a man eating", top_k=2, rerank=three, rerank_top_k=4, rerank_label=1)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_rerank_alpha_blends_the_reference_scores_with_the_search(index, reranker, reference, mode):
    """alpha x the reference's scores + (1 - alpha) x the search's, each min-max normalised over
    the reranked list, computed here by hand; 1 is the reranker's order, 0 the search's."""
    retrieved = index.search_many(QUERIES, top_k=6, mode=mode)
    for alpha in (0.0, 0.3, 0.7, 1.0):
        got = index.search_many(QUERIES, top_k=4, mode=mode, rerank=reranker, rerank_top_k=6, rerank_alpha=alpha)
        for query, hits, found in zip(QUERIES, got, retrieved):
            ce = np.asarray(reference.predict([(query, h.passage) for h in found]), dtype=np.float64)
            first = np.array([h.score for h in found])
            norm = lambda x: (x - x.min()) / (x.max() - x.min())  # noqa: E731
            blend = alpha * norm(ce) + (1 - alpha) * norm(first)
            want = np.argsort(-blend, kind="stable")[:4]
            assert [h.id for h in hits] == [found[i].id for i in want], (alpha, blend)
            np.testing.assert_allclose([h.score for h in hits], blend[want], atol=1e-5)
    best_first = index.search_many(QUERIES, top_k=4, mode=mode, rerank=reranker, rerank_top_k=6, rerank_alpha=0.0)
    assert [[h.id for h in hits] for hits in best_first] == [[h.id for h in found[:4]] for found in retrieved]
    for bad in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="rerank_alpha must be a number in"):
            index.search(QUERIES[0], top_k=3, mode=mode, rerank=reranker, rerank_alpha=bad)
    with pytest.raises(ValueError, match="rerank_alpha need rerank"):
        index.search(QUERIES[0], top_k=3, rerank_alpha=0.5)


def test_bad_arguments_are_named(index, reranker):
    vector = index.encoder.encode("a man eating")
    with pytest.raises(ValueError, match="vector query cannot be reranked"):
        index.search(vector, top_k=2, rerank=reranker)
    with pytest.raises(ValueError, match="vector query cannot be reranked"):
        index.search_many(vector[None, :], top_k=2, rerank=reranker)
    for bad in (2, 0, -1, 2.5, True):
        with pytest.raises(ValueError, match="rerank_top_k must be an integer >= top_k"):
            index.search("a man eating", top_k=3, rerank=reranker, rerank_top_k=bad)
    with pytest.raises(ValueError, match="rerank_top_k, rerank_label and rerank_alpha need rerank"):
        index.search("a man eating", top_k=3, rerank_top_k=10)
    assert index.search_many([], top_k=3, rerank=reranker) == []
