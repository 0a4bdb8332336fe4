from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from sentembed.training.samplers import MixtureBatchSampler, shard


def toy(n, prefix):
    return [(f"{prefix}{i}a", f"{prefix}{i}b") for i in range(n)]


def test_every_batch_from_one_dataset_and_shares_match_weights():
    # the mpnet_stackexchange_v1 rule on the real line counts: 10,000 batches, shares within 2%
    sizes, weights = [644, 212, 197], [60, 19, 18]
    data = [toy(n, f"d{k}_") for k, n in enumerate(sizes)]
    s = MixtureBatchSampler(data, weights, batch_size=8, seed=3, num_batches=10_000)
    counts = [0, 0, 0]
    for ds, rows in s:
        counts[ds] += 1
        assert len(rows) == 8 and all(r < sizes[ds] for r in rows)
    for c, w in zip(counts, weights):
        assert abs(c / 10_000 - w / sum(weights)) < 0.02


def test_no_duplicate_text_within_a_batch():
    data = [[("same", f"x{i}") for i in range(3)] + [(f"q{i}", f"p{i}") for i in range(30)]]
    for _, rows in MixtureBatchSampler(data, batch_size=8, seed=0, num_batches=50):
        texts = [t for r in rows for t in data[0][r]]
        assert len(texts) == len(set(texts))


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4), bs=st.integers(1, 6), seed=st.integers(0, 99))
def test_len_does_not_lie(sizes, bs, seed):
    data = [toy(n, f"d{k}_") for k, n in enumerate(sizes)]
    s = MixtureBatchSampler(data, batch_size=min(bs, min(sizes)), seed=seed)
    assert len(list(s)) == len(s)
    assert len(list(s)) == len(s)  # the second pass too


def test_deterministic_and_resumable():
    data = [toy(50, "a"), toy(30, "b")]
    a = list(itertools.islice(MixtureBatchSampler(data, [2, 1], 4, seed=7, num_batches=40), 40))
    b = list(MixtureBatchSampler(data, [2, 1], 4, seed=7, num_batches=40))
    assert a == b
    s = MixtureBatchSampler(data, [2, 1], 4, seed=7, num_batches=40)
    it = iter(s)
    first = [next(it) for _ in range(13)]
    state = s.state_dict()
    s2 = MixtureBatchSampler(data, [2, 1], 4, seed=7, num_batches=40)
    s2.load_state_dict(state)
    assert first + list(s2) == b
    assert list(MixtureBatchSampler(data, [2, 1], 4, seed=8, num_batches=40)) != b


def test_round_robin_and_bad_input():
    data = [toy(10, "a"), toy(10, "b"), toy(10, "c")]
    order = [ds for ds, _ in MixtureBatchSampler(data, batch_size=2, round_robin=True, num_batches=9)]
    assert order == [0, 1, 2] * 3
    with pytest.raises(ValueError, match="weight must be a number > 0"):
        MixtureBatchSampler(data, [1, 0, 1], batch_size=2)
    with pytest.raises(ValueError, match="empty"):
        MixtureBatchSampler([[]], batch_size=2)
    assert shard(list(range(8)), 1, 2) == [4, 5, 6, 7]
