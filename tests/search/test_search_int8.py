"""The int8 copy: its error bound holds (and is nearly reached), search through it is exactly the
fp32 search, and it keeps few candidates. Each result is checked against the fp32 scan of the
same rows or a float64 brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sentembed.model.int8_matmul import amx_matmul
from sentembed.search import Index, candidates, compaction, exact, int8_scan, prefilter
from sentembed.search.exact import Block, topk_blocks
from sentembed.search.int8_scan import Int8Copy, Int8Scan, padded, quantize, read_int8, write_int8
from sentembed.search.view import int8_file, shadow_file
from sentembed.vectors import matmul_t

from support import HashEncoder


@pytest.fixture(autouse=True, params=["int_mm", "amx"])
def int8_scan_on(monkeypatch, request):
    """These tests are about the int8 scan: write and run it on every CPU (without VNNI it is
    slower, not wrong), and never the bf16 one; each through torch._int_mm, and again through
    oneDNN's matmul primitive (products laid out by rows) where the CPU has AMX."""
    if request.param == "amx" and not amx_matmul():
        pytest.skip("no AMX here: int8 products run through torch._int_mm only")
    if request.param == "int_mm":
        monkeypatch.setattr(int8_scan, "amx_matmul", lambda: False)
    monkeypatch.setattr(int8_scan, "int8_scan_pays", lambda: True)
    monkeypatch.setattr(prefilter, "bf16_scan_pays", lambda: False)
    monkeypatch.setattr(compaction, "copies_to_write", lambda: [(int8_file, write_int8)])


def _both(q: np.ndarray, c: np.ndarray, k: int, **kw):
    """(through the int8 copy, the plain fp32 scan) of the same rows."""
    qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
    fast = topk_blocks(qt, [Block(0, c, Int8Copy.of(c))], k, "dot", len(c), **kw)
    slow = topk_blocks(qt, [Block(0, c)], k, "dot", len(c), **kw)
    return fast, slow


def _assert_same(fast, slow):
    np.testing.assert_array_equal(fast.indices, slow.indices)
    np.testing.assert_array_equal(fast.scores, slow.scores)


def _error_share(q: np.ndarray, c: np.ndarray) -> float:
    """Largest |r - f| / bound over all pairs, f the float64 and the fp32 score; asserts <= 1."""
    copy = Int8Copy.of(c)
    scan = Int8Scan(torch.from_numpy(q), [copy])
    rho, scale = scan.scores(copy, 0, len(c))
    rho = rho.float()
    assert rho.dtype == torch.float32
    r = rho.double() * scale[:, None]
    qi, ci = torch.meshgrid(torch.arange(len(q)), torch.arange(len(c)), indexing="ij")
    bound = scan.row_slack(copy, 0, qi.reshape(-1), ci.reshape(-1)).view(len(q), len(c)) + scan.rel * r.abs()
    assert (bound <= scan.slack[:, None] + scan.rel * r.abs()).all()  # the scan's floor covers every row
    f64 = torch.from_numpy(q.astype(np.float64) @ c.astype(np.float64).T)
    f32 = matmul_t(torch.from_numpy(q), torch.from_numpy(c)).double()
    assert ((r - f32).abs() <= bound).all()
    return float(((r - f64).abs() / bound).max())


def _half_quanta(signs: np.ndarray, rng) -> np.ndarray:
    """Rows with scale 2^-7 exactly (one component at 127 quanta) whose other components sit just
    inside half a quantum from an integer, on the side `signs` gives: the largest rounding error,
    all of it along `signs`."""
    n, d = signs.shape
    whole = rng.integers(-120, 121, (n, d)).astype(np.float64)
    rows = (whole + 0.4999 * signs) * 2.0 ** -7
    rows[:, 0] = 127 * 2.0 ** -7
    return rows.astype(np.float32)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])
def test_bound_holds_on_random_vectors(scale):
    rng = np.random.default_rng(0)
    q = (rng.standard_normal((6, 96)) * scale).astype(np.float32)
    c = (rng.standard_normal((2000, 96)) * scale).astype(np.float32)
    assert _error_share(q, c) <= 1.0


def test_bound_is_nearly_reached_on_worst_case_rounding():
    rng = np.random.default_rng(1)
    d = 384
    # The rows' rounding errors all point along the query, which int8 holds exactly (every
    # component at +-127 quanta): |q.(c^ - c)| = |q| |c^ - c|, the whole corpus side of the bound.
    q = (np.sign(rng.standard_normal((1, d))) * 127 * 2.0 ** -5).astype(np.float32)
    share_rows = _error_share(q, _half_quanta(np.repeat(-np.sign(q), 50, 0), rng))
    # And the other way round: the query's rounding errors along exact rows.
    signs = np.sign(rng.standard_normal((1, d)))
    rows = np.repeat(signs * 127 * 2.0 ** -4, 40, 0).astype(np.float32)
    share_query = _error_share(_half_quanta(-signs, rng), rows)
    assert 0.95 < share_rows <= 1.0
    assert 0.95 < share_query <= 1.0


def _refined(q: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """(largest |r' - f| / bound over all pairs, f the float64 and the fp32 score; the largest
    refined bound over the scan's own) of Int8Scan.refine; asserts the bound holds."""
    copy = Int8Copy.of(c)
    scan = Int8Scan(torch.from_numpy(q), [copy])
    qi, ci = (x.reshape(-1) for x in torch.meshgrid(torch.arange(len(q)), torch.arange(len(c)), indexing="ij"))
    r, bound = scan.refine(copy, qi, ci)
    f32 = matmul_t(torch.from_numpy(q), torch.from_numpy(c)).double().reshape(-1)
    f64 = torch.from_numpy(q.astype(np.float64) @ c.astype(np.float64).T).reshape(-1)
    assert ((r - f32).abs() <= bound).all()
    return float(((r - f64).abs() / bound).max()), float((bound / scan.row_slack(copy, 0, qi, ci)).max())


@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])
def test_refined_bound_holds_on_random_vectors(scale):
    rng = np.random.default_rng(0)
    q = (rng.standard_normal((6, 96)) * scale).astype(np.float32)
    c = (rng.standard_normal((2000, 96)) * scale).astype(np.float32)
    share, narrower = _refined(q, c)
    assert share <= 1.0 and narrower < 0.9


def test_refined_bound_drops_the_query_rounding_and_keeps_the_rows():
    rng = np.random.default_rng(1)
    d = 384
    # Rows whose rounding errors all point along the query: the refined bound is that error.
    q = (np.sign(rng.standard_normal((1, d))) * 127 * 2.0 ** -5).astype(np.float32)
    share_rows, _ = _refined(q, _half_quanta(np.repeat(-np.sign(q), 50, 0), rng))
    assert 0.95 < share_rows <= 1.0
    # The query's rounding errors along rows int8 holds exactly: the scan's bound is all query
    # rounding, the refined one only fp32 summation (the refined score uses the fp32 query).
    signs = np.sign(rng.standard_normal((1, d)))
    rows = np.repeat(signs * 127 * 2.0 ** -4, 40, 0).astype(np.float32)
    share_query, narrower = _refined(_half_quanta(-signs, rng), rows)
    assert share_query <= 1.0 and narrower < 0.01


def test_quantize_and_the_file(tmp_path):
    rng = np.random.default_rng(2)
    parts = [rng.standard_normal((n, 13)).astype(np.float32) for n in (5, 0, 3000)]
    parts[0][1] = 0  # a zero row
    write_int8(tmp_path / "x.i8", parts)
    got = read_int8(tmp_path / "x.i8", 3005, 13)
    want = Int8Copy.of(np.concatenate(parts))
    assert got.codes.shape == (3005, padded(13)) == (3005, 16)
    for name in ("codes", "scale", "norm", "err"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert (got.max_norm, got.max_err) == (want.max_norm, want.max_err)
    c64 = np.concatenate(parts).astype(np.float64)
    deq = got.codes[:, :13].astype(np.float64) * got.scale[:, None]
    assert (np.abs(got.codes) <= 127).all() and (got.codes[:, 13:] == 0).all()
    assert (np.linalg.norm(deq - c64, axis=1) <= got.err).all() and (np.linalg.norm(deq, axis=1) <= got.norm).all()
    assert got.err[1] == 0 and got.norm[1] == 0
    with pytest.warns(UserWarning, match="damaged"):
        assert read_int8(tmp_path / "x.i8", 3005, 12) is None
    groups = got.scale[: 3005 // 128 * 128].reshape(-1, 128)
    assert (groups == groups[:, :1]).all() and len(np.unique(groups[:, 0])) > 1  # a scale per 128 rows
    _, _, _, err = quantize(np.array([[np.inf, 1.0]], np.float32))
    assert err[0] == np.inf
    codes, scale, _, err = quantize(np.array([[np.inf, 1.0], [0.5, 0.25], [np.nan, 0]], np.float32), group=2)
    assert codes[1, :2].tolist() == [127, 64] and scale[1] == scale[0] and err[1] < 0.01  # inf has no say
    assert err[0] == err[2] == np.inf


def test_equals_the_fp32_scan_on_unit_vectors():
    rng = np.random.default_rng(3)
    c = rng.standard_normal((20000, 96)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = c[rng.choice(len(c), 40)] + 0.3 * rng.standard_normal((40, 96)).astype(np.float32)
    for chunk in (3000, None):
        _assert_same(*_both(q, c, 10, corpus_chunk_size=chunk))
    _assert_same(*_both(q[:1], c, 1))  # one query, one hit: products of one row or one query


def test_near_ties_duplicates_and_exclusions():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((50, 32)).astype(np.float32)
    c = np.repeat(base, 80, axis=0) + 1e-4 * rng.standard_normal((4000, 32)).astype(np.float32)
    c[::7] = c[0]  # exact duplicates: equal scores, the lower row first
    q = base[:12] + 1e-3 * rng.standard_normal((12, 32)).astype(np.float32)
    exclude = rng.random(len(c)) < 0.2
    fast, slow = _both(q, c, 25, exclude=exclude, corpus_chunk_size=700)
    _assert_same(fast, slow)
    assert not exclude[fast.indices].any()


def test_too_many_candidates_falls_back_to_fp32(monkeypatch):
    monkeypatch.setattr(exact, "MAX_CANDIDATES", 64)
    rng = np.random.default_rng(5)
    c = np.concatenate([np.tile(rng.standard_normal((1, 16)), (3000, 1)), rng.standard_normal((3000, 16))]).astype(np.float32)
    _assert_same(*_both(rng.standard_normal((5, 16)).astype(np.float32), c, 7, corpus_chunk_size=500))


def test_zero_vectors_and_varied_norms():
    rng = np.random.default_rng(6)
    c = rng.standard_normal((3000, 24)).astype(np.float32) * 10.0 ** rng.uniform(-4, 4, (3000, 1)).astype(np.float32)
    c[rng.random(3000) < 0.1] = 0
    q = rng.standard_normal((7, 24)).astype(np.float32) * 10.0 ** rng.uniform(-3, 3, (7, 1)).astype(np.float32)
    q[2] = 0  # every score 0: the first k rows
    fast, slow = _both(q, c, 9, corpus_chunk_size=512)
    _assert_same(fast, slow)
    assert fast.indices[2].tolist() == list(range(9))


def test_candidates_on_random_unit_vectors_are_few(monkeypatch):
    """The bound's tightness (no timing): on 20,000 random unit 768-d vectors (the bound is
    about 0.02 there), top-10 keeps about 55 candidates a query (150 when the k-th best's lower
    bound carries an error, not an fp32 score: Candidates.tighten), and reads about 27 rows a
    query in fp32 (55 before Int8Scan.refine)."""
    rng = np.random.default_rng(7)
    c = rng.standard_normal((20000, 768)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = rng.standard_normal((20, 768)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    counts, rescore, gather = [], candidates.Candidates.rescore, exact._gather
    rescored = []

    def counting(self):
        self._prune()
        counts.append(len(self.row) / self.n)
        return rescore(self)

    monkeypatch.setattr(candidates.Candidates, "rescore", counting)
    monkeypatch.setattr(exact, "_gather", lambda blocks, rows: rescored.append(len(rows)) or gather(blocks, rows))
    copy = Int8Copy.of(c)
    assert float(Int8Scan(torch.from_numpy(q), [copy]).slack.max()) < 0.025
    got = topk_blocks(torch.from_numpy(q), [Block(0, c, copy)], 10, "dot", len(c))
    assert counts and max(counts) < 80
    assert sum(rescored) / len(q) < 35
    np.testing.assert_array_equal(got.indices, topk_blocks(torch.from_numpy(q), [Block(0, c)], 10, "dot", len(c)).indices)


@pytest.mark.parametrize("n", [128 * 5, 128 * 5 + 37, 90])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("by_rows", [False, True])
def test_int8_scores_above_a_floor_are_those_of_the_products(n, shared, by_rows):
    """Int8Scores.at_or_above (integer keys for groups of columns sharing a scale; a product of
    every score where scales vary) finds exactly the pairs whose fp32 score fl(I s_c) reaches
    the floor, excluded columns left out, on floors that sit on scores themselves; the products
    int32 (queries, rows), or fp32 laid out (rows, queries) as the AMX kernel gives them."""
    gen = torch.Generator().manual_seed(n)
    products = torch.randint(-40000, 40000, (6, n), generator=gen, dtype=torch.int32)
    if by_rows:
        products = products.float().t().contiguous().t()
    scale = torch.rand(n, generator=gen) * torch.logspace(-4, 0, n)[torch.randperm(n, generator=gen)]
    if shared:
        scale = scale[::int8_scan.SCALE_GROUP].repeat_interleave(int8_scan.SCALE_GROUP)[:n]
    scores = int8_scan.Int8Scores(products, scale)
    dense = products * scale
    floor = dense.topk(9, dim=1).values[:, -1].clamp(min=1e-3)  # some floors equal a score
    dead = torch.zeros(n, dtype=torch.bool)
    dead[::7] = True
    scores.masked_fill_(dead, -np.inf)
    q, c = candidates.at_or_above(scores, floor)
    want = ((dense >= floor[:, None]) & ~dead).nonzero(as_tuple=True)
    assert sorted(zip(q.tolist(), c.tolist())) == sorted(zip(want[0].tolist(), want[1].tolist()))
    assert torch.equal(scores[q, c], dense[q, c])
    assert torch.equal(scores.float()[:, 7], torch.full((6,), -np.inf))  # a dead column: -inf


def _hits(idx: Index, q: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    return [[(h.id, h.score) for h in hits] for hits in idx.search_many(q, k)]


def test_index_with_deletions_dot_and_a_bf16_segment(tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    enc = HashEncoder(dimension=40, similarity="dot", normalize=False)
    vecs = rng.standard_normal((1500, 40)).astype(np.float32) * rng.uniform(0.1, 10, (1500, 1)).astype(np.float32)
    idx = Index.create(tmp_path / "ix", enc)
    monkeypatch.setattr(prefilter, "bf16_scan_pays", lambda: True)
    with monkeypatch.context() as older:
        older.setattr(compaction, "copies_to_write", lambda: [(shadow_file, prefilter.write_shadow)])
        idx.add([f"t{i}" for i in range(1400)], vectors=vecs[:1400])  # an older segment: a bf16 copy
    idx.add([f"t{i}" for i in range(1400, 1500)], vectors=vecs[1400:])  # int8
    assert sorted(p.suffix for p in (tmp_path / "ix" / "vectors").iterdir()) == [".bf16", ".f32", ".f32", ".i8"]
    dead = rng.choice(1500, 300, replace=False)
    idx.delete([str(i) for i in dead])
    q = rng.standard_normal((6, 40)).astype(np.float32)
    got = _hits(Index.open(tmp_path / "ix", enc), q, 12)
    truth = q.astype(np.float64) @ vecs.astype(np.float64).T
    truth[:, dead] = -np.inf
    for hits, t in zip(got, truth):
        assert [int(i) for i, _ in hits] == np.argsort(-t, kind="stable")[:12].tolist()
        np.testing.assert_allclose([s for _, s in hits], np.sort(t)[::-1][:12], rtol=1e-5)
    monkeypatch.setattr(int8_scan, "int8_scan_pays", lambda: False)
    monkeypatch.setattr(prefilter, "bf16_scan_pays", lambda: False)
    assert _hits(Index.open(tmp_path / "ix", enc), q, 12) == got  # the fp32 scan: the same hits, scores


def test_rows_read_by_the_row_reader_or_through_the_maps_give_the_same_search(tmp_path, monkeypatch):
    """A large index re-scores rows read by rows.row_reader, a small one through its memory maps."""
    from sentembed.search import view

    enc = HashEncoder(dimension=16)
    rng = np.random.default_rng(4)
    vecs = rng.standard_normal((900, 16)).astype(np.float32)
    idx = Index.create(tmp_path / "ix", enc)
    for part in range(3):  # three segments
        ids = [f"t{i}" for i in range(300 * part, 300 * part + 300)]
        idx.add(ids, ids=ids, vectors=vecs[300 * part:300 * part + 300])
    idx.delete([f"t{i}" for i in range(0, 900, 5)])
    q = vecs[:7] + 0.05
    mapped = _hits(idx, q, 9)
    monkeypatch.setattr(view, "MAPPED_BYTES", 0)
    assert _hits(Index.open(tmp_path / "ix", enc), q, 9) == mapped


def test_truncated_int8_file_warns_and_search_stays_exact(tmp_path):
    enc = HashEncoder(dimension=16)
    rng = np.random.default_rng(9)
    vecs = rng.standard_normal((500, 16)).astype(np.float32)
    idx = Index.create(tmp_path / "ix", enc)
    idx.add([f"t{i}" for i in range(500)], vectors=vecs)
    q = vecs[:5] + 0.05
    before = _hits(idx, q, 5)
    idx.close()
    copy = tmp_path / "ix" / "vectors" / "seg-000001.i8"
    with open(copy, "r+b") as f:
        f.truncate(1000)
    with pytest.warns(UserWarning, match="seg-000001.i8"):
        assert _hits(Index.open(tmp_path / "ix", enc), q, 5) == before


def test_compact_rewrites_an_int8_copy_with_a_scale_per_row(tmp_path, monkeypatch):
    """Copies written before rows shared a scale stay exact; `compact()` rewrites them."""
    enc = HashEncoder(dimension=16)
    vecs = np.random.default_rng(4).standard_normal((700, 16)).astype(np.float32)
    monkeypatch.setattr(int8_scan, "SCALE_GROUP", 1)  # the old writer
    idx = Index.create(tmp_path / "ix", enc)
    idx.add([f"t{i}" for i in range(700)], vectors=vecs)
    monkeypatch.undo()
    path = tmp_path / "ix" / "vectors" / "seg-000001.i8"
    assert int8_scan.outdated(path, 700, 16)
    q = vecs[:5] + 0.05
    before = _hits(idx, q, 5)
    assert idx.compact() == 1
    assert not int8_scan.outdated(path, 700, 16) and _hits(idx, q, 5) == before
    idx.close()
    assert _hits(Index.open(tmp_path / "ix", enc), q, 5) == before  # the checksum committed too


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 200), d=st.integers(1, 24), k=st.integers(1, 8), log_scale=st.floats(-5, 5),
       dot=st.booleans(), seed=st.integers(0, 10_000))
def test_index_search_is_exact_property(tmp_path_factory, n, d, k, log_scale, dot, seed):
    rng = np.random.default_rng(seed)
    vecs = (rng.standard_normal((n, d)) * 10.0 ** log_scale).astype(np.float32)
    vecs[rng.random(n) < 0.2] = vecs[0]  # exact duplicates
    vecs[rng.random(n) < 0.1] = 0
    enc = HashEncoder(dimension=d, similarity="dot" if dot else "cosine", normalize=not dot)
    idx = Index.create(tmp_path_factory.mktemp("ix") / "ix", enc)
    idx.add([f"t{i}" for i in range(n)], vectors=vecs)
    assert any(p.suffix == ".i8" for p in (idx.path / "vectors").iterdir())
    q = (rng.standard_normal((3, d)) * 10.0 ** -log_scale).astype(np.float32)
    stored = vecs if dot else vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    queries = q if dot else q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    truth = queries.astype(np.float64) @ stored.astype(np.float64).T
    tol = 1e-5 * np.abs(queries).sum(1, keepdims=True) * np.abs(stored).max()
    for hits, t, tl in zip(_hits(idx, q, k), truth, tol):
        rows = [int(i) for i, _ in hits]
        assert len(rows) == len(set(rows)) == min(k, n)
        kth = np.sort(t)[::-1][len(rows) - 1]
        assert (t[rows] >= kth - tl).all()  # the float64 top k, up to fp32 rounding of near-ties
        np.testing.assert_allclose([s for _, s in hits], t[rows], atol=float(tl[0]) + 1e-30)


def test_int8_only_where_the_cpu_has_int8_dot_products(monkeypatch):
    from dataclasses import replace

    from sentembed.model.cpu import cpu

    monkeypatch.undo()  # the real choices, on a CPU told what it has
    assert int8_scan.int8_products_exact()
    for vnni, bf16, written in [(False, False, ".i8"), (False, True, ".bf16"), (True, True, ".i8")]:
        told = replace(cpu(), vnni=vnni, bf16=bf16)
        monkeypatch.setattr(int8_scan, "cpu", lambda: told)
        monkeypatch.setattr(compaction, "cpu", lambda: told)
        int8_scan.int8_scan_pays.cache_clear()
        try:
            assert int8_scan.int8_scan_pays() is False or vnni  # measured only where VNNI or AMX is
            assert compaction.copies_to_write()[0][0]("seg-000001.f32").endswith(written)
        finally:
            int8_scan.int8_scan_pays.cache_clear()
