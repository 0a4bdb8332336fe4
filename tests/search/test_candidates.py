"""The running top-k's bookkeeping (candidates.py) against plain sorts: each query's k-th
largest value and its k best positions, for even, skewed and short lists of candidates."""
from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sentembed.search.candidates import Candidates


@st.composite
def candidate_lists(draw):
    n, k = draw(st.integers(1, 40)), draw(st.integers(1, 12))
    skew = draw(st.booleans())  # most candidates on one query: the sorted fallback
    size = draw(st.integers(0, 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    query = np.where(rng.random(size) < 0.9, 0, rng.integers(0, n, size)) if skew else rng.integers(0, n, size)
    score = np.round(rng.standard_normal(size), draw(st.sampled_from([1, 8])))  # rounded to 1 digit: many ties
    cands = Candidates(n, k, torch.zeros(n, dtype=torch.float64), 0.0)
    cands.query, cands.score = torch.from_numpy(query.astype(np.int64)), torch.from_numpy(score)
    cands.row = torch.from_numpy(rng.permutation(10 * size + 1)[:size].astype(np.int64))
    return cands, query, score


@settings(max_examples=150, deadline=None)
@given(candidate_lists())
def test_kth_and_best_agree_with_sorting(case):
    cands, query, score = case
    best = cands._best().numpy()
    kth = cands._kth(cands.score).numpy()
    assert len(set(best.tolist())) == len(best)
    for q in range(cands.n):
        mine = np.sort(score[query == q])[::-1]
        assert kth[q] == (mine[cands.k - 1] if len(mine) >= cands.k else -math.inf)
        chosen = best[query[best] == q]
        assert len(chosen) == min(cands.k, len(mine))
        # the chosen are k largest: their values are the top of the sorted list (ties: any of them)
        np.testing.assert_array_equal(np.sort(score[chosen])[::-1], mine[: len(chosen)])


def test_more_queries_than_16_bits_hold():
    """A query chunk over 32,768 queries (query_chunk_size set so) groups by 64-bit keys."""
    n = 40_000
    rng = np.random.default_rng(0)
    cands = Candidates(n, 1, torch.zeros(n, dtype=torch.float64), 0.0)
    cands.query = torch.from_numpy(np.repeat(np.arange(n), 2)[rng.permutation(2 * n)])
    cands.score = torch.from_numpy(rng.standard_normal(2 * n))
    cands.row = torch.arange(2 * n)
    want = np.full(n, -np.inf)
    np.maximum.at(want, cands.query.numpy(), cands.score.numpy())
    np.testing.assert_array_equal(cands._kth(cands.score).numpy(), want)
    best = cands._best().numpy()
    np.testing.assert_array_equal(np.sort(cands.query.numpy()[best]), np.arange(n))
    np.testing.assert_array_equal(cands.score.numpy()[best], want[cands.query.numpy()[best]])
