"""Exact top-k against independent references: NumPy brute force and sentence-transformers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sentembed.search import semantic_search
from sentembed.search import exact as exact_mod
from sentembed.search.exact import brute_force_topk
from sentembed.vectors import pairwise_scores, resolve_similarity

from support import HashEncoder


def _data(n=3000, nq=23, d=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((nq, d)).astype(np.float32), rng.standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("sim", ["cosine", "dot", "euclidean", "manhattan"])
def test_matches_numpy_brute_force_across_chunks(sim):
    q, c = _data(n=1500 if sim == "manhattan" else 5000)
    got = semantic_search(q, c, top_k=7, score=sim, corpus_chunk_size=333, query_chunk_size=5)
    ref = brute_force_topk(q, c, 7, sim)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-4)


def test_cosine_matches_sentence_transformers():
    from sentence_transformers import util

    q, c = _data(n=4000)
    got = semantic_search(q, c, top_k=10)
    ref = util.semantic_search(torch.from_numpy(q), torch.from_numpy(c), top_k=10)
    assert [[h["corpus_id"] for h in r] for r in ref] == got.indices.tolist()
    np.testing.assert_allclose([[h["score"] for h in r] for r in ref], got.scores, atol=1e-5)
    assert got.to_lists()[0][0]["corpus_id"] == ref[0][0]["corpus_id"]


def test_dot_stays_dot():
    from sentence_transformers import util

    q, c = _data(n=2000)
    c *= np.random.default_rng(1).uniform(0.1, 5, size=(len(c), 1)).astype(np.float32)  # norms differ
    dot = semantic_search(q, c, top_k=10, score="dot")
    cos = semantic_search(q, c, top_k=10, score="cosine")
    assert (dot.indices != cos.indices).any()
    ref = util.semantic_search(torch.from_numpy(q), torch.from_numpy(c), top_k=10, score_function=util.dot_score)
    assert [[h["corpus_id"] for h in r] for r in ref] == dot.indices.tolist()
    np.testing.assert_allclose(dot.scores, (q @ c.T)[np.arange(len(q))[:, None], dot.indices], rtol=1e-5)


def test_score_follows_the_encoder_similarity():
    q, c = _data(n=500)
    enc = HashEncoder(similarity="dot")
    assert resolve_similarity(enc) == "dot"
    np.testing.assert_array_equal(semantic_search(q, c, 5, score=enc).indices, brute_force_topk(q, c, 5, "dot").indices)


def test_top_k_larger_than_corpus_returns_everything_ranked():
    q, c = _data(n=6, nq=2)
    res = semantic_search(q, c, top_k=50)
    assert res.indices.shape == (2, 6)
    assert sorted(res.indices[0].tolist()) == list(range(6))
    assert (np.diff(res.scores, axis=1) <= 0).all()


def test_memmap_corpus(tmp_path):
    q, c = _data(n=3000)
    mm = np.memmap(tmp_path / "c.f32", dtype=np.float32, mode="w+", shape=c.shape)
    mm[:] = c
    mm.flush()
    ro = np.memmap(tmp_path / "c.f32", dtype=np.float32, mode="r", shape=c.shape)
    np.testing.assert_array_equal(semantic_search(q, ro, 5).indices, brute_force_topk(q, c, 5).indices)


def test_corpus_is_scored_in_bounded_chunks(monkeypatch):
    seen = []
    real = exact_mod.score_chunk

    def spy(q, extra, c, sim):
        seen.append(c.shape[0])
        return real(q, extra, c, sim)

    monkeypatch.setattr(exact_mod, "score_chunk", spy)
    q, c = _data(n=10_000, nq=3)
    semantic_search(q, c, 3, corpus_chunk_size=4096)
    assert max(seen) <= 4096 and sum(seen) == 10_000


@pytest.mark.parametrize("bad_k", [0, -1, 2.5])
def test_bad_top_k(bad_k):
    q, c = _data(n=10)
    with pytest.raises(ValueError, match="top_k"):
        semantic_search(q, c, top_k=bad_k)


def test_empty_corpus():
    with pytest.raises(ValueError, match="empty"):
        semantic_search(np.ones((1, 4)), np.zeros((0, 4)), 3)


def test_nan_query_names_row():
    q, c = _data(n=10)
    q[2, 5] = np.nan
    with pytest.raises(ValueError, match="queries row 2"):
        semantic_search(q, c, 3)


def test_nan_corpus_names_row():
    q, c = _data(n=5000)
    c[4321, 0] = np.inf
    with pytest.raises(ValueError, match="corpus row 4321"):
        semantic_search(q, c, 3, corpus_chunk_size=1000)


def test_wrong_dimension():
    with pytest.raises(ValueError, match="dimension"):
        semantic_search(np.ones((1, 4)), np.ones((3, 5)), 1)


def test_unknown_similarity():
    with pytest.raises(ValueError, match="unknown similarity"):
        semantic_search(np.ones((1, 4)), np.ones((3, 4)), 1, score="hamming")


def test_pairwise_matches_reference_formulas():
    a, b = _data(n=7, nq=5)
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(pairwise_scores(a, b, "cosine"), an @ bn.T, atol=1e-5)
    np.testing.assert_allclose(pairwise_scores(a, b, "euclidean"), -np.linalg.norm(a[:, None] - b[None], axis=2), atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), nq=st.integers(1, 9), d=st.integers(1, 16), k=st.integers(1, 20),
       chunk=st.integers(1, 64), seed=st.integers(0, 10_000), sim=st.sampled_from(["cosine", "dot"]))
def test_property_equals_brute_force(n, nq, d, k, chunk, seed, sim):
    q, c = _data(n=n, nq=nq, d=d, seed=seed)
    got = semantic_search(q, c, top_k=k, score=sim, corpus_chunk_size=chunk)
    ref = brute_force_topk(q, c, k, sim)
    assert got.indices.shape == (nq, min(k, n))
    # Near-ties may swap order; the scores at every rank must agree.
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-5)
