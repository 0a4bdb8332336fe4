"""Chunked documents, lexical (FTS5) and hybrid search in the index: passages and spans,
filters on both lists, deletes, crash safety, upgrade of an old index, hostile queries."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from sentembed.search import Index
from sentembed.search.fusion import rrf

from support import HashEncoder

ROOT = Path(__file__).resolve().parent.parent.parent
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}

LONG = ("The harbour town woke early. Fishing boats left before dawn and came back at noon.\n\n"
        "In the afternoon the market sold cod, herring and mackerel to visitors. "
        "Later a storm rolled in from the west and the lighthouse keeper lit the lamp. "
        "By midnight the zeppelin had vanished over the cliffs.")
DOCS = [LONG, "stocks fell sharply today on the exchange", "the dog barked at the cat", "interest rates rose again"]
META = [{"kind": "story"}, {"kind": "news"}, {"kind": "pets"}, {"kind": "news"}]


@pytest.fixture
def enc():
    return HashEncoder(dimension=32)


@pytest.fixture
def index(tmp_path, enc):
    idx = Index.create(tmp_path / "ix", enc, chunk_tokens=12, chunk_overlap=2)
    idx.add(DOCS, ids=["long", "stocks", "dog", "rates"], metadata=META)
    return idx


def counts(path: Path) -> tuple[int, int, int, int]:
    """(live documents, passages of live documents, FTS rows, vector rows) straight from disk."""
    db = sqlite3.connect(str(path / "catalog.sqlite"))
    docs = db.execute("SELECT COUNT(*) FROM docs WHERE deleted = 0").fetchone()[0]
    passages = db.execute("SELECT COUNT(*) FROM passages p JOIN docs d ON d.row = p.doc WHERE d.deleted = 0").fetchone()[0]
    fts = db.execute("SELECT COUNT(*) FROM lexical").fetchone()[0]
    vector_rows = sum(n for (n,) in db.execute("SELECT n_rows FROM segments"))
    all_passages = db.execute("SELECT COUNT(*) FROM passages").fetchone()[0]
    db.close()
    assert vector_rows == all_passages
    return docs, passages, fts, vector_rows


def test_long_document_is_passages_of_one_document(index):
    assert len(index) == 4
    docs, passages, fts, rows = counts(index.path)
    assert docs == 4 and passages == fts == rows and rows > 6
    spans = index.chunk([LONG])[0]
    assert len(spans) > 3 and all(LONG[a:b] for a, b in spans)
    for mode in ("dense", "lexical", "hybrid"):
        hits = index.search("zeppelin vanished over the cliffs", top_k=4, mode=mode)
        assert [h.id for h in hits].count("long") == 1  # a document once, by its best passage
        best = next(h for h in hits if h.id == "long")
        assert best.text == LONG and best.passage == LONG[best.span[0]:best.span[1]]
    lex = index.search("zeppelin", mode="lexical")
    assert [h.id for h in lex] == ["long"] and "zeppelin" in lex[0].passage
    short = index.search("interest rates", mode="lexical")[0]
    assert short.id == "rates" and short.passage == short.text and short.span == (0, len(short.text))


def test_dense_document_score_is_its_best_passage(index, enc):
    hit = index.search("lighthouse keeper lit the lamp", top_k=1, mode="dense")[0]
    q = enc.encode("lighthouse keeper lit the lamp")
    passages = [LONG[a:b] for a, b in index.chunk([LONG])[0]]
    scores = enc.encode(passages) @ q
    assert hit.id == "long" and hit.passage == passages[int(np.argmax(scores))]
    assert hit.score == pytest.approx(float(scores.max()), abs=1e-5)


def test_hybrid_is_reciprocal_rank_fusion_of_both_lists(index):
    q = "cat market"
    dense = [h.id for h in index.search(q, top_k=4, mode="dense")]
    lexical = [h.id for h in index.search(q, top_k=4, mode="lexical")]
    expected = rrf([(i, 0) for i in dense], [(i, 0) for i in lexical])
    hybrid = index.search(q, top_k=4, mode="hybrid")
    assert [(h.id, h.score) for h in hybrid] == [(k, pytest.approx(s)) for k, s in expected]
    weighted = index.search(q, top_k=4, mode="hybrid", alpha=0.0)
    assert [h.id for h in weighted][: len(lexical)] == lexical  # alpha 0: the lexical order
    assert [h.id for h in index.search(q, top_k=4, mode="hybrid", alpha=1.0)] == dense


def test_words_in_half_the_passages_add_nothing_and_are_left_out(tmp_path, enc):
    """BM25 scores equal FTS5's own over the whole query; a word in half the passages or more
    (idf clamped to 1e-6) is left out while the others fill top_k, and searched otherwise."""
    texts = ["the cat", "the dog and the cat", "the zeppelin", "a zeppelin over the sea", "the end", "stocks fell"]
    idx = Index.create(tmp_path / "ix", enc, chunk_tokens=None)
    idx.add(texts, ids=[str(i) for i in range(len(texts))])
    ref = sqlite3.connect(":memory:")
    ref.execute("CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61 remove_diacritics 2')")
    ref.executemany("INSERT INTO t(rowid, text) VALUES (?, ?)", enumerate(texts))
    full = ref.execute("""SELECT rowid, -bm25(t) FROM t WHERE t MATCH '"the" OR "zeppelin"' ORDER BY rank""").fetchall()
    assert len(full) == 5  # "the": in 5 of 6 texts
    hits = idx.search("The zeppelin!", top_k=2, mode="lexical")
    assert [(h.id, h.score) for h in hits] == [(str(r), pytest.approx(s, abs=1e-5)) for r, s in full[:2]]
    assert {h.id for h in hits} == {"2", "3"}  # found without "the"
    hits = idx.search("The zeppelin!", top_k=10, mode="lexical")  # fewer than 10 without "the": all of it
    assert [(h.id, h.score) for h in hits] == [(str(r), pytest.approx(s, abs=1e-5)) for r, s in full]
    assert {h.id for h in idx.search("the", top_k=10, mode="lexical")} == {"0", "1", "2", "3", "4"}


def test_documents_from_the_best_passages_first_equal_those_from_every_match(tmp_path, enc):
    """Grouping a head of the best passages gives the ranking of grouping every matching
    passage, with many passages per document, common words, deletions and a filter."""
    from sentembed.search import lexical
    from sentembed.search.filters import compile_where

    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(40)]
    odds = 1 / np.arange(1, 41)  # a few words in most passages, most in few
    texts = [" ".join(rng.choice(vocabulary, size=rng.integers(3, 60), p=odds / odds.sum())) for _ in range(80)]
    idx = Index.create(tmp_path / "ix", enc, chunk_tokens=10, chunk_overlap=2)
    idx.add(texts, ids=[str(i) for i in range(80)], metadata=[{"even": i % 2 == 0} for i in range(80)])
    idx.delete([str(i) for i in range(0, 80, 7)])
    db = idx._catalog.db
    passages = db.execute("SELECT count(*) FROM lexical").fetchone()[0]

    def every_match(expression, k, where):   # the ranking before the head: whole matches only
        for e in (lexical.informative(db, expression, passages), expression):
            found = lexical._documents(db, e, k, where, True, None)
            if len(found) >= k:
                return found
        return found

    for query in ("w0 w1", "w2 w30 w31", "w5", "w39 w38 w0", "w0 w1 w2 w3 w4 w20"):
        for k in (1, 3, 10, 40, 100):
            for where in (None, {"even": True}):
                got = [h.score for h in idx.search(query, top_k=k, mode="lexical", where=where)]
                want = every_match(lexical.match_expression(query), k, compile_where(where) if where else None)
                assert got == [s for _, s in want], (query, k, where)


def test_where_applies_to_both_lists(index):
    for mode in ("dense", "lexical", "hybrid"):
        hits = index.search("stocks exchange rates herring", top_k=10, where={"kind": "news"}, mode=mode)
        assert {h.id for h in hits} <= {"stocks", "rates"} and hits
    assert index.search("herring", mode="lexical", where={"kind": "news"}) == []


def test_delete_removes_vectors_passages_and_lexical_rows(index):
    index.delete(["long"])
    assert len(index) == 3
    docs, passages, fts, _ = counts(index.path)
    assert docs == 3 and passages == fts == 3
    assert index.search("zeppelin", mode="lexical") == []
    assert "long" not in {h.id for h in index.search("zeppelin", top_k=10, mode="dense")}
    index.add([LONG], ids=["long"])  # the id is free again
    assert index.search("zeppelin", mode="lexical")[0].id == "long"


HOSTILE = ['"unbalanced quote', 'cat AND dog', 'cat OR', 'OR', 'NEAR(cat dog, 2)', 'cat*', '^cat', 'text:cat',
           '(cat', 'cat)', '-cat', 'NOT cat', '{text}: cat', 'cat"; DROP TABLE docs; --', "it's", '"""', 'a "b" c',
           'lexical:cat', 'rank:1', 'cat NEAR/2 dog', '*', 'AND', '^', ':', '((((', "'", 'bm25(lexical)']


@pytest.mark.parametrize("query", HOSTILE)
def test_fts5_syntax_in_a_query_is_searched_as_words(index, query):
    import re

    words = " ".join(re.findall(r"\w+", query))
    got = index.search(query, top_k=4, mode="lexical")
    if words:
        assert [h.id for h in got] == [h.id for h in index.search(words, top_k=4, mode="lexical")]
    hybrid = index.search(query, top_k=4, mode="hybrid")
    assert len(hybrid) == 4  # the dense list alone fills it
    assert counts(index.path)[0] == 4  # nothing was dropped


def test_query_without_words_falls_back_to_dense(index):
    for query in ("?!", "...", "  ", "—", "😀"):
        dense = [(h.id, h.score) for h in index.search(query, top_k=4, mode="dense")]
        assert [(h.id, h.score) for h in index.search(query, top_k=4, mode="lexical")] == dense
        assert [(h.id, h.score) for h in index.search(query, top_k=4, mode="hybrid")] == dense


def test_bad_mode_alpha_and_chunk_sizes(tmp_path, index, enc):
    with pytest.raises(ValueError, match="valid modes: dense, lexical, hybrid"):
        index.search("cat", mode="sparse")
    for alpha in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
            index.search("cat", mode="hybrid", alpha=alpha)
    with pytest.raises(ValueError, match="alpha weighs"):
        index.search("cat", mode="dense", alpha=0.5)
    with pytest.raises(ValueError, match="needs query texts"):
        index.search(enc.encode("cat"), mode="lexical")
    with pytest.raises(ValueError, match=r"chunk_overlap \(8\) must be smaller than chunk_tokens \(8\)"):
        Index.create(tmp_path / "bad", enc, chunk_tokens=8, chunk_overlap=8)
    with pytest.raises(ValueError, match="one vector per text or per passage"):
        index.add([LONG], ids=["again"], vectors=enc.encode([LONG, LONG]))
    index.add([LONG], ids=["whole"], vectors=enc.encode([LONG]))  # one vector a text: stored whole
    assert index.search("zeppelin", top_k=2, mode="lexical", where=None)[1].passage == LONG


def test_unchunked_index_and_vectors_per_text(tmp_path, enc):
    idx = Index.create(tmp_path / "whole", enc, chunk_tokens=None)
    idx.add(DOCS, vectors=enc.encode(DOCS))
    assert counts(idx.path)[1:3] == (4, 4)
    hit = idx.search("zeppelin", mode="lexical")[0]
    assert hit.id == "0" and hit.passage == LONG and hit.span == (0, len(LONG))


def make_old_index(path: Path, enc) -> None:
    """An index as sentembed made it before passages and the lexical table."""
    idx = Index.create(path, enc, chunk_tokens=None)
    idx.add(DOCS, ids=["long", "stocks", "dog", "rates"], metadata=META)
    idx.delete(["dog"])
    idx.close()
    db = sqlite3.connect(str(path / "catalog.sqlite"))
    db.executescript("DROP TABLE lexical; DROP TABLE passages; DELETE FROM state WHERE key = 'documents';")
    db.close()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = 1
    del manifest["chunking"]
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_old_index_opens_as_before_and_upgrades(tmp_path, enc):
    make_old_index(tmp_path / "old", enc)
    old = Index.open(tmp_path / "old", enc)
    assert len(old) == 3 and not old.lexical
    before = [(h.id, h.score) for h in old.search("market cod herring", top_k=3)]
    hit = old.search("market cod herring", top_k=1)[0]
    assert hit.id == "long" and hit.passage == LONG
    with pytest.raises(ValueError, match="sentembed index upgrade"):
        old.search("cod", mode="lexical")
    assert old.upgrade() is True and old.lexical and old.upgrade() is False
    assert len(old) == 3 and [(h.id, h.score) for h in old.search("market cod herring", top_k=3)] == before
    assert old.search("herring", mode="lexical")[0].id == "long"
    assert old.search("barked", mode="lexical") == []  # deleted before the upgrade
    old.add(["a new herring story"], ids=["new"])
    assert {h.id for h in old.search("herring", mode="lexical")} == {"long", "new"}
    reopened = Index.open(tmp_path / "old", enc)
    assert reopened.manifest["version"] == 2 and len(reopened) == 4


KILL_CHILD = textwrap.dedent("""
    import sys, time
    from support import HashEncoder
    from sentembed.search import Index, lexical
    path = sys.argv[1]
    idx = Index.create(path, HashEncoder(dimension=16), chunk_tokens=6, chunk_overlap=1)
    idx.add([f"doc {i} about apples and pears, the first batch of many words" for i in range(50)])
    print("committed", flush=True)
    real = lexical.insert
    def slow_insert(cur, rows, texts):
        real(cur, rows, texts)  # inside the open transaction: docs and FTS rows written, not committed
        print("inside the transaction", flush=True)
        time.sleep(60)
    lexical.insert = slow_insert
    idx.add([f"late doc {i} mentions quinces and zucchini across several windows of words" for i in range(50)])
""")


def test_killed_inside_a_chunked_hybrid_add(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(KILL_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ix")], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env=CHILD_ENV)
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith("inside"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lines == ["committed", "inside the transaction"]
    enc = HashEncoder(dimension=16)
    idx = Index.open(tmp_path / "ix", enc)
    docs, passages, fts, rows = counts(tmp_path / "ix")
    assert len(idx) == docs == 50 and passages == fts == rows > 50
    assert idx.search("quinces zucchini", mode="lexical") == []
    assert all(h.text.startswith("doc ") for h in idx.search("quinces zucchini", top_k=60, mode="hybrid"))
    idx.add(["after the crash: quinces"], ids=["after"])  # the next writer cleans up and goes on
    assert [h.id for h in idx.search("quinces", mode="lexical")] == ["after"]
    assert counts(tmp_path / "ix")[0] == 51


def test_ten_megabyte_document(tmp_path, enc):
    """Chunked in bounded time, stored, and found by a word deep inside it."""
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(5000)])
    words = rng.choice(vocab, 1_750_000).astype(object)
    words[1_234_567] = "needleword"
    text = " ".join(words)
    assert len(text) > 10_000_000
    idx = Index.create(tmp_path / "big", enc, chunk_tokens=256, chunk_overlap=32)
    start = time.perf_counter()
    spans = idx.chunk([text])[0]
    idx.add([text, "a short one"], ids=["big", "short"],
            vectors=rng.standard_normal((len(spans) + 1, 32)).astype(np.float32))
    assert time.perf_counter() - start < 120
    hit = idx.search("needleword", mode="lexical")[0]
    assert hit.id == "big" and "needleword" in hit.passage and hit.passage == text[hit.span[0]:hit.span[1]]
    assert len(idx) == 2 and counts(idx.path)[1] == len(spans) + 1
