"""Compaction: adds merge small segments on their own (few segments, same answers); compact()
drops deleted rows and renumbers, with the lexical table and ANN structure following."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from sentembed.search import Index
from sentembed.search.compaction import merge_plan
from sentembed.search.exact import brute_force_topk
from sentembed.search.rows import read_blocks
from sentembed.search.store import Segment, open_segment

from support import HashEncoder


@pytest.fixture
def enc():
    return HashEncoder(dimension=16)


def test_merge_plan_keeps_sizes_geometric():
    sizes: list[int] = []
    for n in [1] * 300 + [50, 1, 1, 7]:
        sizes.append(n)
        count = merge_plan(tuple(Segment(i, "", 0, s) for i, s in enumerate(sizes)))
        if count:
            sizes[-count:] = [sum(sizes[-count:])]
        assert all(a > sum(sizes[i + 1:]) for i, a in enumerate(sizes[:-1])), sizes
    assert len(sizes) <= np.log2(sum(sizes)) + 1


def test_read_blocks_gives_the_mapped_rows_in_blocks(tmp_path):
    # The copies are written from blocks read this way: every row once, in order, the last
    # block short; an empty segment still gives its width; a short file is named damaged.
    rows = np.random.default_rng(0).standard_normal((10, 6)).astype(np.float32)
    (tmp_path / "vectors").mkdir()
    seg = Segment(1, "vectors/seg-000001.f32", 0, 10)
    (tmp_path / seg.file).write_bytes(rows.tobytes())
    blocks = list(read_blocks(tmp_path / seg.file, 10, 6, 4))
    assert [len(b) for b in blocks] == [4, 4, 2]
    assert np.array_equal(np.concatenate(blocks), open_segment(tmp_path, seg, 6))
    empty = Segment(2, "vectors/seg-000002.f32", 10, 0)
    (tmp_path / empty.file).write_bytes(b"")
    assert [b.shape for b in read_blocks(tmp_path / empty.file, 0, 6, 4)] == [(0, 6)]
    (tmp_path / seg.file).write_bytes(rows[:9].tobytes())
    with pytest.raises(RuntimeError, match="damaged"):
        list(read_blocks(tmp_path / seg.file, 10, 6, 4))


def test_many_small_adds_stay_few_segments(tmp_path, enc):
    idx = Index.create(tmp_path / "ix", enc)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((120, 16)).astype(np.float32)
    for i in range(120):
        assert idx.add([f"text {i}"], vectors=vecs[i : i + 1]) == [str(i)]
    info = idx.info()
    assert info["count"] == 120 and info["segments"] <= np.log2(120) + 1
    assert len(list((tmp_path / "ix" / "vectors").glob("*.f32"))) == info["segments"]
    q = rng.standard_normal((5, 16)).astype(np.float32)
    ref = brute_force_topk(q / np.linalg.norm(q, axis=1, keepdims=True),
                           vecs / np.linalg.norm(vecs, axis=1, keepdims=True), 7, "dot")
    assert [[int(h.id) for h in hits] for hits in idx.search_many(q, 7)] == ref.indices.tolist()


@pytest.mark.parametrize("kind, block", [("exact", None), ("hnsw", None), ("exact", 7)])
def test_compact_drops_deleted_rows_and_renumbers(tmp_path, enc, kind, block, monkeypatch):
    if block:  # segments read in blocks that cut across the runs of deleted rows
        monkeypatch.setattr("sentembed.search.compaction.WRITE_BLOCK", block)
    idx = Index.create(tmp_path / "ix", enc, kind=kind)
    texts = [f"doc {i} about {'cats' if i % 2 else 'stocks'}" for i in range(60)]
    for s in range(0, 60, 20):
        idx.add(texts[s : s + 20], metadata=[{"n": i} for i in range(s, s + 20)])
    idx.delete([str(i) for i in range(0, 60, 3)])
    before = {m: [(h.id, round(h.score, 5)) for h in idx.search("doc about cats", top_k=15, mode=m)]
              for m in ("dense", "lexical", "hybrid")}
    filtered = [h.id for h in idx.search("doc", top_k=50, where={"n": {"$gte": 30}})]
    assert idx.compact() >= 1
    info = idx.info()
    assert info["rows"] == info["count"] == 40 and info["deleted"] == 0 and info["segments"] == 1
    for m, hits in before.items():
        assert [(h.id, round(h.score, 5)) for h in idx.search("doc about cats", top_k=15, mode=m)] == hits, m
    assert [h.id for h in idx.search("doc", top_k=50, where={"n": {"$gte": 30}})] == filtered
    # Automatic ids go on counting: no id of the past comes back.
    assert idx.add(["a new one"]) == ["60"]
    idx.close()
    again = Index.open(tmp_path / "ix", enc)
    assert again.search("a new one", top_k=1)[0].id == "60" and len(again) == 41


def test_compact_a_chunked_index(tmp_path):
    enc = HashEncoder(dimension=16)  # no tokenizer: words and punctuation count as tokens
    idx = Index.create(tmp_path / "ix", enc, chunk_tokens=8, chunk_overlap=2)
    long = [" ".join(f"w{d}x{i}" for i in range(30)) for d in range(6)]
    idx.add(long, ids=[f"d{d}" for d in range(6)])
    idx.delete(["d1", "d4"])
    before = [(h.id, h.span, round(h.score, 5)) for h in idx.search("w3x20 w5x3", top_k=4, mode="hybrid")]
    idx.compact()
    after = [(h.id, h.span, round(h.score, 5)) for h in idx.search("w3x20 w5x3", top_k=4, mode="hybrid")]
    assert after == before and {h[0] for h in after} <= {"d0", "d2", "d3", "d5"}


def test_cli_compact(tmp_path, enc):
    from sentembed.cli import app

    idx = Index.create(tmp_path / "ix", enc)
    idx.add(["one", "two"])
    idx.add(["three"])
    idx.delete(["1"])
    idx.close()
    r = CliRunner().invoke(app, ["index", "compact", str(tmp_path / "ix")])  # needs no model
    assert r.exit_code == 0, r.output
    assert "2 documents, 1 segment" in r.output


def _found_under(directory, needle: bytes) -> list[str]:
    return [str(f.relative_to(directory)) for f in sorted(directory.rglob("*")) if f.is_file() and needle in f.read_bytes()]


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_deleted_document_is_gone_from_disk(tmp_path, enc, kind):
    """After delete the text and metadata are nowhere under the index directory (SQLite's
    secure_delete, the WAL checkpointed); after compact() neither are its words (the lexical
    table's terms) nor its vector's bytes (fp32 and bf16)."""
    import torch

    path = tmp_path / "ix"
    idx = Index.create(path, enc, kind=kind)
    idx.add([f"ordinary text number {i}" for i in range(30)])
    secret = "quokkas whisper zanzibar secrets"
    vec = np.random.default_rng(1).standard_normal(16).astype(np.float32)
    vec /= np.linalg.norm(vec)
    idx.add([secret], ids=["secret"], metadata=[{"note": "xylophone-metadata"}], vectors=vec[None])
    idx.add([f"later text {i}" for i in range(5)])
    fp32, bf16 = vec.tobytes(), torch.from_numpy(vec).bfloat16().view(torch.int16).numpy().tobytes()
    assert _found_under(path, secret.encode()) and _found_under(path, fp32)
    idx.delete(["secret"])
    for needle in (secret.encode(), b"xylophone-metadata"):
        assert _found_under(path, needle) == [], needle
    idx.compact()
    idx.close()
    for needle in (secret.encode(), b"zanzibar", b"xylophone-metadata", fp32, bf16):
        assert _found_under(path, needle) == [], needle
    again = Index.open(path, enc)
    assert len(again) == 35 and again.search("later text 3", top_k=1)[0].text == "later text 3"
