"""The bf16 pre-filter: its error bound holds, and search through it is exactly the fp32 search."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sentembed.search import Index
from sentembed.search import exact as exact_mod
from sentembed.search.candidates import Candidates
from sentembed.search.exact import Block, brute_force_topk, topk_blocks
from sentembed.search.prefilter import Bf16Scan, Shadow, bf16_scores, to_bf16, write_shadow
from sentembed.search.view import shadow_file

from support import HashEncoder


@pytest.fixture(autouse=True, scope="module")
def bf16_scan():
    """These tests are about the bf16 scan and its bound: run it on every CPU, even where the
    index would choose the fp32 scan for speed (CPUs without native bf16), or the int8 one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sentembed.search.prefilter.bf16_scan_pays", lambda: True)
        patch.setattr("sentembed.search.int8_scan.int8_scan_pays", lambda: False)
        patch.setattr("sentembed.search.compaction.copies_to_write", lambda: [(shadow_file, write_shadow)])
        yield


def _shadowed(c: np.ndarray) -> Block:
    bits, norm, err = to_bf16(c)
    return Block(0, c, Shadow(bits, norm, err))


def _worst_case_rows(q: np.ndarray, n: int, rng) -> np.ndarray:
    """Rows whose bf16 rounding errors all push their score against `q` the same way."""
    c = rng.standard_normal((n, q.shape[0])).astype(np.float32)
    ulp = np.abs(c) * 2.0 ** -7
    # Just under half an ulp past a bf16 value, on the side that raises q.c: the largest error.
    base = torch.from_numpy(c).to(torch.bfloat16).float().numpy()
    return (base + np.sign(q) * 0.499 * ulp).astype(np.float32)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])
def test_bound_holds_for_every_pair(scale):
    rng = np.random.default_rng(0)
    q = (rng.standard_normal((8, 384)) * scale).astype(np.float32)
    c = np.concatenate([rng.standard_normal((3000, 384)).astype(np.float32) * scale,
                        _worst_case_rows(q[0], 500, rng) * scale])
    bits, norm, err = to_bf16(c)
    bound = Bf16Scan(torch.from_numpy(q), [Shadow(bits, norm, err)])
    approx = bf16_scores(bound.q16, torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)).double()
    exact = torch.from_numpy(q.astype(np.float64) @ c.astype(np.float64).T)
    allowed = bound.slack.unsqueeze(1) + bound.rel * approx.abs()
    ratio = ((approx - exact).abs() / allowed).max()
    assert ratio <= 1.0
    assert ratio > 0.05  # the worst-case rows make the bound work: this test can fail


def test_floor_keeps_every_possible_winner():
    slack, rel = torch.tensor([0.01, 0.0, 0.02], dtype=torch.float64), 2.0 ** -8
    cands = Candidates(3, 5, slack, rel)
    kth = torch.tensor([0.5, -0.5, 0.0], dtype=torch.float64)  # lower bounds of the k-th best fp32 score
    cands._raise_floor(kth)
    # A row at the floor, off by the most the bound allows, can still tie the weakest winner.
    for f, t, d in zip(cands.floor.tolist(), kth.tolist(), slack.tolist()):
        best_exact = f + d + rel * abs(f)
        assert best_exact <= t
        assert best_exact == pytest.approx(t, abs=1e-9)  # the head-room is all that is lost


def _assert_exact_topk(got, q, c, k, sim="dot"):
    """Scores are the true ones and no row outside the result beats the weakest row in it."""
    ref = brute_force_topk(q, c, k, sim)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=0, atol=2e-5)
    truth = q.astype(np.float64) @ c.astype(np.float64).T
    for i in range(len(q)):
        chosen = truth[i, got.indices[i]]
        np.testing.assert_allclose(got.scores[i], chosen, atol=2e-5)
        assert truth[i].max() <= chosen.max() + 2e-5
        outside = np.delete(truth[i], got.indices[i])
        assert outside.size == 0 or outside.max() <= chosen.min() + 2e-5


def test_prefiltered_equals_fp32_search_on_unit_vectors():
    rng = np.random.default_rng(1)
    c = rng.standard_normal((20000, 96)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = c[rng.choice(len(c), 40)] + 0.3 * rng.standard_normal((40, 96)).astype(np.float32)
    fast = topk_blocks(torch.from_numpy(q), [_shadowed(c)], 10, "dot", len(c), corpus_chunk_size=3000)
    slow = topk_blocks(torch.from_numpy(q), [Block(0, c)], 10, "dot", len(c), corpus_chunk_size=3000)
    np.testing.assert_array_equal(fast.indices, slow.indices)
    np.testing.assert_allclose(fast.scores, slow.scores, atol=1e-6)
    _assert_exact_topk(fast, q, c, 10)


def test_near_ties_duplicates_and_exclusions():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((50, 32)).astype(np.float32)
    # Clusters of near-copies: many scores inside the bound of each other.
    c = np.repeat(base, 80, axis=0) + 1e-4 * rng.standard_normal((4000, 32)).astype(np.float32)
    q = base[:12] + 1e-3 * rng.standard_normal((12, 32)).astype(np.float32)
    exclude = rng.random(len(c)) < 0.2
    got = topk_blocks(torch.from_numpy(q), [_shadowed(c)], 25, "dot", len(c), exclude=exclude, corpus_chunk_size=700)
    assert not exclude[got.indices].any()
    keep = np.flatnonzero(~exclude)
    mapped = np.searchsorted(keep, got.indices)
    _assert_exact_topk(type(got)(got.scores, mapped), q, c[keep], 25)


def test_too_many_candidates_falls_back_to_fp32(monkeypatch):
    monkeypatch.setattr(exact_mod, "MAX_CANDIDATES", 64)
    rng = np.random.default_rng(3)
    c = np.concatenate([np.tile(rng.standard_normal((1, 16)), (3000, 1)), rng.standard_normal((3000, 16))]).astype(np.float32)
    q = rng.standard_normal((5, 16)).astype(np.float32)
    got = topk_blocks(torch.from_numpy(q), [_shadowed(c)], 7, "dot", len(c), corpus_chunk_size=500)
    _assert_exact_topk(got, q, c, 7)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), d=st.integers(1, 40), k=st.integers(1, 12), log_scale=st.floats(-6, 6),
       seed=st.integers(0, 10_000))
def test_prefiltered_is_exact_property(n, d, k, log_scale, seed):
    rng = np.random.default_rng(seed)
    c = (rng.standard_normal((n, d)) * 10.0 ** log_scale).astype(np.float32)
    c[rng.random(n) < 0.2] = c[0]  # exact duplicates
    q = (rng.standard_normal((3, d)) * 10.0 ** -log_scale).astype(np.float32)
    got = topk_blocks(torch.from_numpy(q), [_shadowed(c)], k, "dot", n, corpus_chunk_size=64)
    assert got.indices.shape == (3, min(k, n))
    truth = q.astype(np.float64) @ c.astype(np.float64).T
    tol = 1e-5 * np.abs(q).sum(1, keepdims=True) * np.abs(c).max()
    kth = np.sort(truth, axis=1)[:, ::-1][:, min(k, n) - 1]
    chosen = np.take_along_axis(truth, got.indices, 1)
    assert (chosen >= kth[:, None] - tol).all()
    assert all(len(set(r)) == len(r) for r in got.indices)  # no row twice


def test_index_writes_shadows_and_survives_a_damaged_one(tmp_path):
    enc = HashEncoder(dimension=32)
    texts = [f"document number {i} about {w}" for i, w in enumerate(["cats", "stocks", "rain", "code"] * 150)]
    idx = Index.create(tmp_path / "ix", enc)
    idx.add(texts)
    shadow = tmp_path / "ix" / "vectors" / "seg-000001.bf16"
    assert shadow.stat().st_size == len(texts) * 32 * 2 + 24
    before = [[(h.id, round(h.score, 5)) for h in hits] for hits in idx.search_many(texts[:20], 5)]
    idx.close()
    with open(shadow, "r+b") as f:
        f.truncate(1000)
    idx = Index.open(tmp_path / "ix", enc)
    with pytest.warns(UserWarning, match="damaged"):
        after = [[(h.id, round(h.score, 5)) for h in hits] for hits in idx.search_many(texts[:20], 5)]
    assert after == before


def test_read_rows_matches_the_memory_map(tmp_path):
    from sentembed.search.rows import read_rows

    m = np.random.default_rng(4).standard_normal((500, 12)).astype(np.float32)
    path = tmp_path / "seg.f32"
    path.write_bytes(m.tobytes())
    rows = np.array([7, 3, 4, 5, 499, 3, 0, 250, 251])  # unsorted, runs, a repeat, both ends
    np.testing.assert_array_equal(read_rows(path, 12, rows), m[rows])
    np.testing.assert_array_equal(read_rows(path, 12, np.arange(500)), m)
    path.write_bytes(m[:100].tobytes())
    with pytest.raises(RuntimeError, match="damaged"):
        read_rows(path, 12, np.array([499]))


def test_the_row_reader_matches_the_memory_map_and_lets_its_pages_go(tmp_path):
    from sentembed.search.rows import MAPPED_READ_ROWS, row_reader

    m = np.random.default_rng(5).standard_normal((3000, 64)).astype(np.float32)
    path = tmp_path / "seg.f32"
    path.write_bytes(m.tobytes())
    rng = np.random.default_rng(6)
    with open(path, "rb", buffering=0) as f:
        read = row_reader(f, 3000, 64)
        for rows in (np.array([7, 3, 3, 2999, 0]), rng.integers(0, 3000, 5 * MAPPED_READ_ROWS + 3),
                     np.arange(3000), np.zeros(0, dtype=np.int64)):
            np.testing.assert_array_equal(read(rows), m[rows])
        if sys.platform.startswith("linux"):  # nothing of its mapping stays resident after a read
            assert _resident_kb(path) == 0 < 3000 * 64 * 4 / 1024


def _resident_kb(path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total
