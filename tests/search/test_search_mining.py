"""Paraphrase mining, community detection, k-means and tagging against the reference and brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sentembed.search import community_detection, kmeans, paraphrase_mining, tag
from sentembed.search.exact import brute_force_topk

from support import HashEncoder


def _blobs(k=12, per=15, d=16, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d))
    x = np.concatenate([c + spread * rng.standard_normal((per, d)) for c in centers])
    return x.astype(np.float32), np.repeat(np.arange(k), per)


def test_paraphrase_mining_matches_sentence_transformers():
    from sentence_transformers import util

    x = np.random.default_rng(0).standard_normal((1500, 16)).astype(np.float32)
    ours = paraphrase_mining(x, top_k=4, query_chunk_size=400, corpus_chunk_size=300)
    ref = util.paraphrase_mining_embeddings(torch.from_numpy(x), top_k=4)
    assert len(ours) == len(ref)
    ref_pairs = {(i, j): s for s, i, j in ref}
    assert {(i, j) for _, i, j in ours} == set(ref_pairs)
    for s, i, j in ours:
        assert s == pytest.approx(ref_pairs[(i, j)], abs=1e-5)
    assert all(a[0] >= b[0] for a, b in zip(ours, ours[1:]))


def test_paraphrase_mining_threshold_and_max_pairs():
    x, _ = _blobs()
    all_pairs = paraphrase_mining(x, top_k=5)
    strong = paraphrase_mining(x, top_k=5, threshold=0.9)
    assert strong and all(s >= 0.9 for s, _, _ in strong)
    assert strong == [p for p in all_pairs if p[0] >= 0.9]
    assert paraphrase_mining(x, top_k=5, max_pairs=7) == all_pairs[:7]
    assert all(i < j for _, i, j in all_pairs)


def test_paraphrase_mining_texts_need_an_encoder():
    enc = HashEncoder()
    pairs = paraphrase_mining(["a cat sat", "a cat sat down", "stock markets"], enc, top_k=1)
    assert pairs[0][1:] == (0, 1)
    with pytest.raises(ValueError, match="encoder"):
        paraphrase_mining(["a", "b"])


def test_paraphrase_mining_dot_follows_model():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 8)).astype(np.float32) * rng.uniform(0.1, 5, (50, 1)).astype(np.float32)
    pairs = paraphrase_mining(x, top_k=49, score="dot", max_pairs=10)
    dots = x @ x.T
    best = sorted(((dots[i, j], i, j) for i in range(50) for j in range(i + 1, 50)), reverse=True)[:10]
    assert [(i, j) for _, i, j in pairs] == [(i, j) for _, i, j in best]


def test_community_detection_matches_sentence_transformers():
    from sentence_transformers import util

    x, _ = _blobs(k=20, per=12, spread=0.3)
    for threshold, min_size in [(0.8, 5), (0.9, 3), (0.6, 10)]:
        ours = community_detection(x, threshold, min_size, batch_size=37)
        ref = util.community_detection(torch.from_numpy(x), threshold=threshold, min_community_size=min_size)
        assert [sorted(c) for c in ours] == [sorted(c) for c in ref]
        assert [c[0] for c in ours] == [c[0] for c in ref]


def test_community_detection_recovers_blobs():
    x, labels = _blobs()
    comms = community_detection(x, threshold=0.9, min_size=10)
    assert len(comms) == 12
    for c in comms:
        assert len(set(labels[c])) == 1
    assert community_detection(x[:3], 0.5, 10) == []


def test_kmeans_recovers_blobs():
    x, labels = _blobs(k=5, per=40, spread=0.05)
    res = kmeans(x, 5, seed=1, nredo=5)
    assert res.centroids.shape == (5, 16)
    # each true blob maps to one cluster
    assert all(len(set(res.labels[labels == b])) == 1 for b in range(5))
    assert len(set(res.labels)) == 5
    with pytest.raises(ValueError, match="k must be"):
        kmeans(x, 0)


def test_tag_matches_brute_force_and_names_concepts():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((20, 8)).astype(np.float32)
    c = rng.standard_normal((30, 8)).astype(np.float32)
    tags = tag(p, c, top_k=4)
    ref = brute_force_topk(p, c, 4)
    assert [[t.index for t in row] for row in tags] == ref.indices.tolist()
    np.testing.assert_allclose([[t.score for t in row] for row in tags], ref.scores, atol=1e-5)
    enc = HashEncoder()
    named = tag(["the cat chased a mouse"], ["cat", "stock market", "mouse"], 2, encoder=enc)
    assert {t.concept for t in named[0]} == {"cat", "mouse"}
    assert tag(["the cat"], ["cat", "bond yields"], 2, encoder=enc, threshold=0.5)[0][0].concept == "cat"
    with pytest.raises(ValueError, match="top_k"):
        tag(p, c, top_k=0)
    with pytest.raises(ValueError, match="no concepts"):
        tag(p, [], top_k=1)
