"""The persistent index: round trips, filters, deletes, model checks, atomicity, readers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sentembed.search import Index, compaction, semantic_search
from sentembed.search.exact import brute_force_topk

from support import HashEncoder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# Child processes import this checkout and tests/support.py.
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}

TEXTS = ["a cat sat on the mat", "stocks fell sharply today", "the dog barked at the cat",
         "interest rates rose again", "kittens like warm mats"]
META = [{"topic": "pets", "year": 2020}, {"topic": "money", "year": 2021}, {"topic": "pets", "year": 2022},
        {"topic": "money", "year": 2023}, {"topic": "pets", "year": 2024, "extra": True}]


@pytest.fixture
def enc():
    return HashEncoder(dimension=32)


@pytest.fixture
def index(tmp_path, enc):
    idx = Index.create(tmp_path / "ix", enc)
    idx.add(TEXTS, metadata=META)
    return idx


def test_add_search_reopen(tmp_path, enc, index):
    hits = index.search("cat on the mat", top_k=2)
    assert hits[0].id == "0" and hits[0].text == TEXTS[0] and hits[0].metadata == META[0]
    assert hits[0].score == pytest.approx(float(enc.encode("cat on the mat") @ enc.encode(TEXTS[0])), abs=1e-5)
    index.close()
    again = Index.open(tmp_path / "ix", enc)
    assert len(again) == 5
    assert [h.id for h in again.search("cat on the mat", top_k=2)] == [h.id for h in hits]
    info = again.info()
    assert info["model"] == "hash-encoder" and info["dimension"] == 32 and info["similarity"] == "cosine"


def test_search_by_vector_and_top_k_beyond_size(index, enc):
    hits = index.search(enc.encode("interest rates"), top_k=50)
    assert len(hits) == 5 and hits[0].id == "3"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("where,expected", [
    ({"topic": "money"}, {"1", "3"}),
    ({"year": {"$gte": 2022}}, {"2", "3", "4"}),
    ({"topic": "pets", "year": {"$lt": 2022}}, {"0"}),
    ({"year": {"$in": [2020, 2024]}}, {"0", "4"}),
    ({"topic": {"$ne": "pets"}}, {"1", "3"}),
    ({"extra": {"$exists": True}}, {"4"}),
    ({"extra": True}, {"4"}),
])
def test_metadata_filter(index, where, expected):
    assert {h.id for h in index.search("cat", top_k=10, where=where)} == expected


def test_bad_filter(index):
    with pytest.raises(ValueError, match="unknown operator"):
        index.search("cat", where={"year": {"$near": 1}})


def test_delete(index):
    assert index.delete(["0", "2"]) == 2
    assert len(index) == 3
    assert {h.id for h in index.search("cat", top_k=10)} == {"1", "3", "4"}
    with pytest.raises(KeyError, match="nope"):
        index.delete(["1", "nope"])
    assert len(index) == 3  # nothing deleted by the failed call
    index.add(["a cat again"], ids=["0"])  # a deleted id may be reused
    assert index.search("a cat again", top_k=1)[0].id == "0"


def test_compact_keeps_results(index, enc, tmp_path):
    index.add(["more about cats and mats"], metadata=[{"topic": "pets"}])
    index.delete(["1"])
    before = [(h.id, round(h.score, 6)) for h in index.search("cat mat", top_k=10)]
    assert index.info()["segments"] == 2
    assert index.compact() == 2
    assert index.info()["segments"] == 1 and len(list((tmp_path / "ix" / "vectors").glob("*.f32"))) == 1
    assert [(h.id, round(h.score, 6)) for h in index.search("cat mat", top_k=10)] == before
    index.close()
    assert [(h.id, round(h.score, 6)) for h in Index.open(tmp_path / "ix", enc).search("cat mat", top_k=10)] == before


def test_duplicate_and_bad_ids(index):
    with pytest.raises(ValueError, match="already in the index"):
        index.add(["x"], ids=["1"])
    with pytest.raises(ValueError, match="twice"):
        index.add(["x", "y"], ids=["a", "a"])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        index.add(["x", 3])
    with pytest.raises(ValueError, match=r"metadata\[0\]"):
        index.add(["x"], metadata=[{"a": object()}])
    assert len(index) == 5


def test_bad_vectors(index):
    with pytest.raises(ValueError, match="dimension"):
        index.add(["x"], vectors=np.ones((1, 31), np.float32))
    bad = np.ones((2, 32), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        index.add(["x", "y"], vectors=bad)
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones(8, np.float32))
    with pytest.raises(ValueError, match="top_k"):
        index.search("cat", top_k=0)


def test_vectors_from_a_memory_map_are_read_in_blocks(tmp_path, enc, monkeypatch):
    """The bulk path: vectors larger than memory, given as a memory map, are checked, normalised
    and written a block at a time (segment, copy and merges alike), with the search of the same
    vectors given whole; a bad row in a later block names its row and leaves nothing behind."""
    from sentembed.search import documents

    monkeypatch.setattr(documents, "VECTOR_BLOCK", 7)
    monkeypatch.setattr(compaction, "WRITE_BLOCK", 5)
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((100, 32)).astype(np.float32) * rng.uniform(0.5, 3, (100, 1)).astype(np.float32)
    path = tmp_path / "vectors.f32"
    vecs.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=(100, 32))
    blocked = Index.create(tmp_path / "blocked", enc)
    blocked.add([f"t{i}" for i in range(40)], vectors=mapped[:40])
    blocked.add([f"t{i}" for i in range(40, 100)], vectors=mapped[40:])  # merged with the first
    whole = Index.create(tmp_path / "whole", enc)
    with monkeypatch.context() as m:
        m.setattr(documents, "VECTOR_BLOCK", 10**6)
        m.setattr(compaction, "WRITE_BLOCK", 10**6)
        whole.add([f"t{i}" for i in range(100)], vectors=vecs)
    assert blocked.info()["segments"] == whole.info()["segments"] == 1
    for a, b in zip(sorted((blocked.path / "vectors").iterdir()), sorted((whole.path / "vectors").iterdir())):
        assert a.suffix == b.suffix and a.read_bytes() == b.read_bytes()  # the same bytes, in one write or many
    q = rng.standard_normal((5, 32)).astype(np.float32)
    assert [[(h.id, h.score) for h in hits] for hits in blocked.search_many(q, 10)] == \
           [[(h.id, h.score) for h in hits] for hits in whole.search_many(q, 10)]
    bad = np.array(mapped[:20])
    bad[16, 2] = np.inf  # in the third block of 7
    files = sorted(p.name for p in (blocked.path / "vectors").iterdir())
    with pytest.raises(ValueError, match="row 16 contains NaN or infinity"):
        blocked.add([f"u{i}" for i in range(20)], vectors=bad)
    assert len(blocked) == 100 and sorted(p.name for p in (blocked.path / "vectors").iterdir()) == files


def test_empty_index_search(tmp_path, enc):
    idx = Index.create(tmp_path / "e", enc)
    assert idx.search("anything") == [] and len(idx) == 0


def test_different_model_refused(tmp_path, index):
    index.close()
    with pytest.raises(ValueError, match="different"):
        Index.open(tmp_path / "ix", HashEncoder(dimension=32, seed=7))
    with pytest.raises(ValueError, match="dimension"):
        Index.open(tmp_path / "ix", HashEncoder(dimension=16))
    with pytest.raises(ValueError, match="similarity"):
        Index.open(tmp_path / "ix", HashEncoder(dimension=32, similarity="dot"))
    # The same model under another name is fine: embeddings decide, not names.
    Index.open(tmp_path / "ix", HashEncoder(dimension=32, name="/some/path/hash-encoder"))


def test_create_refuses_existing(tmp_path, enc, index):
    with pytest.raises(FileExistsError, match="Index.open"):
        Index.create(tmp_path / "ix", enc)
    with pytest.raises(FileNotFoundError, match="no index"):
        Index.open(tmp_path / "nothing")


def test_dot_index_keeps_dot_scores(tmp_path):
    enc = HashEncoder(dimension=16, similarity="dot", normalize=False)
    idx = Index.create(tmp_path / "d", enc)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((200, 16)).astype(np.float32) * rng.uniform(0.1, 4, (200, 1)).astype(np.float32)
    idx.add([f"t{i}" for i in range(200)], vectors=vecs)
    q = rng.standard_normal(16).astype(np.float32)
    ref = brute_force_topk(q[None], vecs, 5, "dot")
    hits = idx.search(q, 5)
    assert [int(h.id) for h in hits] == ref.indices[0].tolist()
    np.testing.assert_allclose([h.score for h in hits], ref.scores[0], rtol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_ann_kinds_round_trip_and_delete(tmp_path, enc, kind):
    idx = Index.create(tmp_path / kind, enc, kind=kind, min_train=300, pq_m=8, nlist=8)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((600, 32)).astype(np.float32)
    idx.add([f"t{i}" for i in range(400)], vectors=vecs[:400])
    idx.add([f"t{i}" for i in range(400, 600)], vectors=vecs[400:])
    assert idx.info()["ann_rows"] == 600
    idx.delete(["5"])
    idx.close()
    idx = Index.open(tmp_path / kind, enc)
    hits = idx.search(vecs[5], 3)
    assert "5" not in {h.id for h in hits}
    assert idx.search(vecs[7], 1)[0].id == "7"
    assert idx.search(vecs[7], 3, where={"nothing": {"$exists": False}})[0].id == "7"


def test_ivfpq_is_exact_until_trained(tmp_path, enc):
    idx = Index.create(tmp_path / "p", enc, kind="ivfpq")
    idx.add(TEXTS)
    assert idx.info()["ann_rows"] == 0
    assert idx.search(TEXTS[1], 1)[0].id == "1"


def test_scifact_index_equals_exact_search_and_hnsw_recall(tmp_path, data_dir):
    """All 5,183 SciFact documents (cheap stand-in encoder), closed and reopened."""
    from sentembed.evaluation.readers import read_jsonl

    docs = [(d["_id"], (d["title"] + " " + d["text"]).strip()) for _, d in read_jsonl(data_dir / "scifact" / "corpus.jsonl")]
    queries = [q["text"] for _, q in read_jsonl(data_dir / "scifact" / "queries.jsonl")][:200]
    assert len(docs) == 5183
    enc = HashEncoder(dimension=128)
    vecs = enc.encode([t for _, t in docs])
    qv = enc.encode(queries)
    # Hashed bag-of-words vectors are harder for HNSW than MPNet's (no cluster structure), so
    # the search beam is wider than the default; benchmarks/search.py reports real vectors.
    for kind, params in (("exact", {}), ("hnsw", {"ef_search": 512})):
        idx = Index.create(tmp_path / kind, enc, kind=kind, **params)
        idx.add([t for _, t in docs[:3000]], ids=[i for i, _ in docs[:3000]], vectors=vecs[:3000])
        idx.add([t for _, t in docs[3000:]], ids=[i for i, _ in docs[3000:]], vectors=vecs[3000:])
        idx.close()
    ref = semantic_search(qv, vecs, 10)
    ref_ids = [[docs[j][0] for j in row] for row in ref.indices]
    exact = Index.open(tmp_path / "exact", enc)
    assert len(exact) == 5183
    got = exact.search_many(qv, 10)
    assert [[h.id for h in hits] for hits in got] == ref_ids
    np.testing.assert_allclose([[h.score for h in hits] for hits in got], ref.scores, atol=1e-5)
    hnsw = Index.open(tmp_path / "hnsw", enc)
    approx = hnsw.search_many(qv, 10)
    recall = np.mean([len(set(r) & {h.id for h in a}) / 10 for r, a in zip(ref_ids, approx)])
    assert recall >= 0.98


KILL_CHILD = textwrap.dedent("""
    import sys, time, numpy as np
    from support import HashEncoder
    from sentembed.search import Index
    from sentembed.search import index as index_mod
    path, mode = sys.argv[1], sys.argv[2]
    enc = HashEncoder(dimension=16)
    idx = Index.create(path, enc, kind=mode)
    idx.add([f"doc {{i}}" for i in range(100)])
    print("committed", flush=True)
    real = index_mod.Catalog.commit_add
    def slow_commit(self, *a, **k):
        print("about to commit", flush=True)
        time.sleep(60)
        return real(self, *a, **k)
    index_mod.Catalog.commit_add = slow_commit
    idx.add([f"late doc {{i}}" for i in range(5000)])
""")


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_killed_add_leaves_last_commit(tmp_path, kind):
    script = tmp_path / "child.py"
    script.write_text(KILL_CHILD.format())
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ix"), kind], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env=CHILD_ENV)
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith("about to commit"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lines == ["committed", "about to commit"]
    # The uncommitted segment (and ANN file) is on disk, but nothing names it.
    assert len(list((tmp_path / "ix" / "vectors").glob("*.f32"))) == 2
    enc = HashEncoder(dimension=16)
    idx = Index.open(tmp_path / "ix", enc)
    assert len(idx) == 100
    assert idx.search("doc 42", 1)[0].text == "doc 42"
    idx.add(["after the crash"])  # the next writer cleans up and goes on
    files = sorted(f.name for f in (tmp_path / "ix" / "vectors").iterdir())
    copy = compaction.copies_to_write()[0][0]  # the fast copy this CPU writes beside each segment
    assert files == sorted(name for seg in ("seg-000001.f32", "seg-000002.f32") for name in (seg, copy(seg)))
    assert len(idx) == 101 and idx.search("after the crash", 1)[0].id == "100"


RANDOM_KILL_CHILD = textwrap.dedent("""
    import sys
    from support import HashEncoder
    from sentembed.search import Index
    idx = Index.open(sys.argv[1], HashEncoder(dimension=16))
    n = len(idx)
    while True:
        idx.add([f"doc {{n + i}}" for i in range(50)])
        n += 50
""")


def test_killed_at_random_points_stays_consistent(tmp_path):
    enc = HashEncoder(dimension=16)
    Index.create(tmp_path / "ix", enc).close()
    script = tmp_path / "child.py"
    script.write_text(RANDOM_KILL_CHILD.format())
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ix")], cwd=ROOT,
                                env=CHILD_ENV)
        time.sleep(2.0 + rng.uniform(0, 1.5))
        proc.kill()
        proc.wait()
        idx = Index.open(tmp_path / "ix", enc)
        n = len(idx)
        assert n % 50 == 0
        if n:
            last = n - 1
            assert idx.search(f"doc {last}", 1)[0].text == f"doc {last}"
        idx.close()


READER_CHILD = textwrap.dedent("""
    import sys, numpy as np
    from support import HashEncoder
    from sentembed.search import Index
    idx = Index.open(sys.argv[1], HashEncoder(dimension=16))
    seen = []
    for _ in range(150):
        n = len(idx)
        hits = idx.search("doc 3", 3)
        assert hits[0].text == "doc 3", hits
        assert n % 20 == 0, n
        seen.append(n)
    print(min(seen), max(seen))
""")


def test_several_readers_while_writing(tmp_path):
    enc = HashEncoder(dimension=16)
    idx = Index.create(tmp_path / "ix", enc)
    idx.add([f"doc {i}" for i in range(20)])
    script = tmp_path / "reader.py"
    script.write_text(READER_CHILD.format())
    readers = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "ix")], stdout=subprocess.PIPE, text=True,
                                cwd=ROOT, env=CHILD_ENV) for _ in range(3)]
    errors = []

    def thread_reader():
        try:
            other = Index.open(tmp_path / "ix", enc)
            for _ in range(100):
                assert other.search("doc 3", 1)[0].text == "doc 3"
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=thread_reader) for _ in range(2)]
    for t in threads:
        t.start()
    n = 20
    while any(r.poll() is None for r in readers):
        idx.add([f"doc {i}" for i in range(n, n + 20)])
        n += 20
        if n > 4000:
            break
    for t in threads:
        t.join()
    outs = [r.communicate()[0] for r in readers]
    assert not errors
    assert all(r.returncode == 0 for r in readers), outs


def test_metadata_nesting_is_bounded(index):
    deep: dict = {}
    inner = deep
    for _ in range(200):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(ValueError, match=r"metadata\[1\] nests deeper than 32"):
        index.add(["fine", "too deep"], metadata=[{"a": [{"b": 1}]}, deep])
    assert len(index) == 5


@pytest.mark.parametrize("where,message", [({"topic": {}}, "empty dict"), ({"year": 2**70}, "64 bits"),
                                           ({"year": {"$in": [1, -(2**64)]}}, "64 bits")])
def test_bad_filter_values_are_value_errors(index, where, message):
    for mode in ("dense", "lexical"):
        with pytest.raises(ValueError, match=message):
            index.search("cat", where=where, mode=mode)


def test_automatic_ids_skip_explicit_numeric_ids(tmp_path, enc):
    idx = Index.create(tmp_path / "ids", enc)
    assert idx.add(["one"], ids=["1"]) == ["1"]
    assert idx.add(["two", "three"]) == ["2", "3"]  # "1" (row 0's number) is taken
    assert idx.add(["four"], ids=["5"]) == ["5"]
    assert idx.add(["five", "six"]) == ["6", "7"]
    assert len(idx) == 6


def test_relative_model_path_is_stored_resolved(tmp_path, monkeypatch):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    idx = Index.create("rel-index", HashEncoder(dimension=16, name="models/mine"))
    assert idx.manifest["model"] == str(tmp_path / "models" / "mine")
    named = Index.create("named-index", HashEncoder(dimension=16, name="all-mpnet-base-v2"))
    assert named.manifest["model"] == "all-mpnet-base-v2"
