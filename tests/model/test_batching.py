"""The batch planner (model/batching.py): every batch within the budget, each text planned
exactly once, longest first, a text over the budget alone; packed rows; and the tokenizer's
one-pass ids and counts against its two separate calls."""
from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentembed.model.batching import Budget, estimated_tokens, fill, plan_batches
from sentembed.model.tokenizer import Tokenizer

lengths_st = st.lists(st.integers(1, 600), max_size=80)


def padded_cost(lengths: list[int], batch: list[int]) -> int:
    return len(batch) * max(lengths[i] for i in batch)


@given(lengths_st, st.integers(1, 2048), st.one_of(st.none(), st.integers(1, 40)), st.booleans())
def test_every_text_once_longest_first_within_budget(lengths, budget, max_texts, packed):
    batches = plan_batches(lengths, budget, max_texts, packed=packed)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))  # order restorable: each index exactly once
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first, across batches
    for batch in batches:
        cost = sum(lengths[i] for i in batch) if packed else padded_cost(lengths, batch)
        assert cost <= budget or len(batch) == 1  # a text over the budget goes alone
        assert max_texts is None or len(batch) <= max_texts


@given(lengths_st, st.integers(1, 2048), st.integers(1, 40))
def test_padded_batches_are_as_full_as_the_budget_allows(lengths, budget, max_texts):
    """Greedy: the next batch's first text would not have fitted the one before."""
    batches = plan_batches(lengths, budget, max_texts)
    for batch, following in zip(batches, batches[1:]):
        grown = batch + following[:1]
        assert len(grown) > max_texts or padded_cost(lengths, grown) > budget


def test_examples():
    assert plan_batches([5, 300, 12, 7], 512, 32) == [[1], [2, 3, 0]]
    assert plan_batches([5, 300, 12, 7], 316, packed=True) == [[1, 2], [3, 0]]
    assert plan_batches([2, 9, 3], 9, 2) == [[1], [2, 0]]
    assert plan_batches([700, 3, 3], 512, 8) == [[0], [1, 2]]  # longer than the budget: alone
    assert plan_batches([4, 4, 4], 100, 2) == [[0, 1], [2]]  # equal lengths keep input order
    assert plan_batches([], 512, 8) == []


def test_fill_keeps_the_order_it_is_given():
    assert fill([2, 0, 1], [5, 5, 5], 10, packed=True) == [[2, 0], [1]]
    assert fill([0, 1, 2], [1, 9, 1], 10, packed=True) == [[0, 1], [2]]


def test_budget_counts_padding_or_sum():
    padded, packed = Budget(tokens=10), Budget(tokens=10, packed=True)
    for b in (padded, packed):
        b.add(2)
    assert padded.admits(5) and packed.admits(5)  # 2 × 5 = 10 fits, and so does 2 + 5
    assert not padded.admits(6) and packed.admits(6)  # 2 × 6 = 12 does not; 2 + 6 = 8 does
    assert Budget(tokens=1).admits(999)  # the first text always fits
    assert not Budget(tokens=100, texts=1, count=1, longest=1, total=1).admits(1)


def test_bad_budgets_are_refused():
    with pytest.raises(ValueError, match="token_budget"):
        plan_batches([3], 0)
    with pytest.raises(ValueError, match="max_texts"):
        plan_batches([3], 10, 0)


def test_estimated_tokens():
    assert estimated_tokens("", 128) == 2
    assert estimated_tokens("x" * 40, 128) == 12
    assert estimated_tokens("x" * 10**6, 128) == 130


def test_tokenizer_ids_and_counts_in_one_pass(tiny_model):
    tok = Tokenizer.from_dir(tiny_model, max_length=16)
    rng = random.Random(0)
    words = ["hello", "world", "Größe", "日本語", "😀", "", "a.b", "unbelievable", "x" * 30]
    texts = ["", " ", "word " * 40] + [" ".join(rng.choice(words) for _ in range(rng.randint(0, 40))) for _ in range(60)]
    ids, counts = tok.ids_and_counts(texts)
    assert ids == tok.ids(texts) and counts == tok.count(texts)
    assert any(n > 16 for n in counts) and max(len(row) for row in ids) == 16
