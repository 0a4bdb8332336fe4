"""/search and /index/add|delete on a served Index: the same hits as searching it directly."""
from __future__ import annotations

import httpx
import pytest

from sentembed.server import create_app

DOCS = ["A cat sat on the mat.", "Stocks fell sharply today.", "The kitten is sleeping.", "Rain is expected."]


@pytest.fixture(scope="module")
def served(tiny_encoder, tmp_path_factory, live_server):
    from sentembed.search.index import Index

    index = Index.create(tmp_path_factory.mktemp("idx") / "index", tiny_encoder)
    with live_server(create_app(tiny_encoder, index)) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, index


def test_add_search_delete(served, tiny_encoder):
    client, index = served
    r = client.post("/index/add", json={"texts": DOCS, "ids": ["cat", "stocks", "kitten", "rain"],
                                        "metadata": [{"t": "pets"}, {"t": "money"}, {"t": "pets"}, None]})
    assert r.status_code == 200, r.text
    assert r.json() == {"ids": ["cat", "stocks", "kitten", "rain"], "size": 4}
    r = client.post("/search", json={"query": ["a small cat", "weather"], "top_k": 3})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    for query, hits in zip(["a small cat", "weather"], results):
        direct = index.search(query, top_k=3)
        assert [h["id"] for h in hits] == [h.id for h in direct]
        assert [h["score"] for h in hits] == pytest.approx([h.score for h in direct], abs=1e-5)
    r = client.post("/search", json={"query": "cat", "where": {"t": "pets"}})
    assert {h["id"] for h in r.json()["results"][0]} == {"cat", "kitten"}
    assert client.post("/search", json={"query": "cat", "where": {"t": {"$bogus": 1}}}).status_code == 422
    assert client.post("/index/add", json={"texts": ["again"], "ids": ["cat"]}).status_code == 422
    assert client.post("/index/add", json={"texts": ["a", "b"], "ids": ["x"]}).status_code == 422
    r = client.post("/index/delete", json={"ids": ["stocks"]})
    assert r.json() == {"deleted": 1, "size": 3}
    assert client.post("/index/delete", json={"ids": ["nope"]}).status_code == 422
    assert client.get("/info").json()["index"]["count"] == 3


def test_no_index_no_search_routes(tiny_encoder, live_server):
    with live_server(create_app(tiny_encoder)) as url:
        assert httpx.post(f"{url}/search", json={"query": "x"}).status_code == 404


LONG = " ".join(f"Sentence number {i} talks about harbours and boats." for i in range(40)) + " The zeppelin left."


def test_hybrid_modes_and_passages(tiny_encoder, tmp_path, live_server):
    """A chunked index served: a long text is cut before embedding; every mode answers the
    hits the index gives directly, with the passage and its span."""
    from sentembed.search.index import Index

    index = Index.create(tmp_path / "chunked", tiny_encoder, chunk_tokens=24, chunk_overlap=4)
    with live_server(create_app(tiny_encoder, index)) as url, httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/index/add", json={"texts": [LONG, *DOCS], "ids": ["long", "cat", "stocks", "kitten", "rain"]})
        assert r.status_code == 200, r.text
        assert len(index.chunk([LONG])[0]) > 5
        for mode, alpha in (("dense", None), ("lexical", None), ("hybrid", None), ("hybrid", 0.3)):
            r = client.post("/search", json={"query": "zeppelin", "top_k": 3, "mode": mode, "alpha": alpha})
            assert r.status_code == 200, r.text
            hits = r.json()["results"][0]
            direct = index.search("zeppelin", top_k=3, mode=mode, alpha=alpha)
            assert [h["id"] for h in hits] == [h.id for h in direct]
            assert [h["score"] for h in hits] == pytest.approx([h.score for h in direct], abs=1e-5)
            for h in hits:
                assert h["passage"] == h["text"][h["span"][0]:h["span"][1]]
        lexical = client.post("/search", json={"query": "zeppelin", "mode": "lexical"}).json()["results"][0]
        assert [h["id"] for h in lexical] == ["long"] and "zeppelin" in lexical[0]["passage"]
        assert lexical[0]["passage"] != LONG
        only_marks = client.post("/search", json={"query": "?!", "mode": "lexical", "top_k": 2}).json()["results"][0]
        assert len(only_marks) == 2  # no word: the dense answer
        bad_mode = client.post("/search", json={"query": "x", "mode": "sparse"})
        assert bad_mode.status_code == 422 and "hybrid" in bad_mode.text
        assert client.post("/search", json={"query": "x", "mode": "hybrid", "alpha": 1.5}).status_code == 422
        assert client.post("/search", json={"query": "x", "mode": "dense", "alpha": 0.5}).status_code == 422


def test_compact_route(tiny_encoder, tmp_path, live_server):
    """POST /index/compact drops deleted rows; searches answer as before."""
    from sentembed.search.index import Index

    index = Index.create(tmp_path / "ix", tiny_encoder)
    with live_server(create_app(tiny_encoder, index)) as url, httpx.Client(base_url=url, timeout=30) as client:
        for doc in DOCS:
            assert client.post("/index/add", json={"texts": [doc]}).status_code == 200
        assert client.post("/index/delete", json={"ids": ["1"]}).status_code == 200
        ranked = lambda: [(h["id"], round(h["score"], 5)) for h in
                          client.post("/search", json={"query": "a cat", "top_k": 3}).json()["results"][0]]
        before = ranked()
        r = client.post("/index/compact")
        assert r.status_code == 200, r.text
        assert r.json()["size"] == 3 and r.json()["segments"] == 1 and r.json()["compacted"] >= 1
        assert index.info()["rows"] == 3
        assert ranked() == before


def test_bad_metadata_and_filters_are_422(served):
    client, index = served
    deep: dict = {}
    inner = deep
    for _ in range(300):
        inner["x"] = {}
        inner = inner["x"]
    r = client.post("/index/add", json={"texts": ["deep"], "metadata": [deep]})
    assert r.status_code == 422 and "nests deeper" in r.json()["error"]["message"], r.text
    r = client.post("/index/add", json={"texts": ["a", "b"], "ids": ["same", "same"]})
    assert r.status_code == 422 and "twice" in r.text
    for where in ({"t": {}}, {"t": 2**70}, {"t": {"$in": [2**64]}}, {"t": {"$gt": [1]}}):
        for mode in ("dense", "lexical"):
            r = client.post("/search", json={"query": "cat", "where": where, "mode": mode})
            assert r.status_code == 422, (where, mode, r.text)


def test_search_work_is_bounded(tiny_encoder, tmp_path, live_server):
    """Hits per request (queries x top_k) and the answer's bytes: 413 at once, naming the limit."""
    from sentembed.search.index import Index
    from sentembed.server import ServerConfig

    index = Index.create(tmp_path / "ix", tiny_encoder, chunk_tokens=None)
    config = ServerConfig(max_search_hits=6, max_search_response_bytes=4000)
    with live_server(create_app(tiny_encoder, index, config=config)) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        long = "the zeppelin " + "word " * 1000
        assert client.post("/index/add", json={"texts": [*DOCS, long]}).status_code == 200
        r = client.post("/search", json={"query": ["a", "b", "c"], "top_k": 3})
        assert r.status_code == 413 and "max_search_hits" in r.json()["error"]["message"], r.text
        r = client.post("/search", json={"query": ["a small cat", "rain"], "top_k": 3, "where": {"nope": None}})
        assert r.status_code == 200, r.text
        r = client.post("/search", json={"query": "a cat", "top_k": 3})
        assert r.status_code == 200 and [h["id"] for h in r.json()["results"][0]] == \
            [h.id for h in index.search("a cat", top_k=3)]
        r = client.post("/search", json={"query": "zeppelin", "top_k": 5, "mode": "lexical"})
        assert r.status_code == 413 and "max_search_response_bytes" in r.json()["error"]["message"], r.text


@pytest.fixture(scope="module")
def ce_path(tmp_path_factory):
    from support import build_cross_encoder

    return build_cross_encoder(tmp_path_factory.mktemp("ce"))


def test_search_rerank(tiny_encoder, ce_path, tmp_path, live_server):
    """`rerank: true` answers what Index.search gives with the same cross-encoder: the
    reference's order of the retrieved passages, with its scores."""
    import numpy as np
    from sentence_transformers import CrossEncoder

    import sentembed
    from sentembed.search.index import Index
    from sentembed.server import ServerConfig

    reranker = sentembed.load_cross_encoder(ce_path, device="cpu")
    reference = CrossEncoder(str(ce_path), device="cpu")
    index = Index.create(tmp_path / "ix", tiny_encoder, chunk_tokens=24, chunk_overlap=4)
    app = create_app(tiny_encoder, index, config=ServerConfig(max_client_batch_size=20), reranker=reranker)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        meta = [{"t": "boats"}, {"t": "pets"}, {"t": "money"}, {"t": "pets"}, None]
        r = client.post("/index/add", json={"texts": [LONG, *DOCS], "ids": ["long", "cat", "stocks", "kitten", "rain"],
                                            "metadata": meta})
        assert r.status_code == 200, r.text
        queries = ["a small cat", "the zeppelin"]
        for mode in ("dense", "lexical", "hybrid"):
            r = client.post("/search", json={"query": queries, "top_k": 2, "mode": mode, "rerank": True,
                                             "rerank_top_k": 4})
            assert r.status_code == 200, r.text
            retrieved = index.search_many(queries, top_k=4, mode=mode)
            for query, hits, found in zip(queries, r.json()["results"], retrieved):
                scores = reference.predict([(query, h.passage) for h in found])
                best = np.argsort(-scores, kind="stable")[:2]
                assert [h["id"] for h in hits] == [found[i].id for i in best]
                np.testing.assert_allclose([h["score"] for h in hits], scores[best], atol=1e-5)
                assert all(h["passage"] == h["text"][h["span"][0]:h["span"][1]] for h in hits)
        r = client.post("/search", json={"query": "a cat", "top_k": 2, "where": {"t": "pets"}, "rerank": True,
                                         "rerank_top_k": 5})
        assert {h["id"] for h in r.json()["results"][0]} == {"cat", "kitten"}
        for payload, status in (({"rerank_top_k": 1}, 422), ({"rerank_top_k": 0}, 422), ({"rerank_top_k": 5000}, 422),
                                ({"rerank": False, "rerank_top_k": 4}, 422), ({"query": ["a", "b", "c"]}, 413)):
            body = {"query": "a cat", "top_k": 2, "rerank": True, "rerank_top_k": 8, **payload}
            r = client.post("/search", json=body)
            assert r.status_code == status and "rerank_top_k" in r.json()["error"]["message"], (payload, r.text)
        r = client.post("/search", json={"query": "a cat", "rerank": True, "rerank_label": "nope"})
        assert r.status_code == 422 and "rerank_label" in r.json()["error"]["message"], r.text
        r = client.post("/search", json={"query": queries, "top_k": 3, "mode": "hybrid", "rerank": True,
                                         "rerank_top_k": 4, "rerank_alpha": 0.5})
        want = index.search_many(queries, top_k=3, mode="hybrid", rerank=reranker, rerank_top_k=4, rerank_alpha=0.5)
        assert [[(h["id"], pytest.approx(h["score"], abs=1e-6)) for h in hits] for hits in r.json()["results"]] == \
               [[(h.id, h.score) for h in hits] for hits in want]
        for bad in (1.5, -0.1):
            r = client.post("/search", json={"query": "a cat", "rerank": True, "rerank_alpha": bad})
            assert r.status_code == 422 and "rerank_alpha" in r.text, r.text
        r = client.post("/rerank", json={"query": "a cat", "texts": DOCS})  # the same reranker, still served
        assert r.status_code == 200 and len(r.json()) == len(DOCS)


def test_search_rerank_without_a_server_reranker_names_the_field(served):
    client, _ = served
    r = client.post("/search", json={"query": "cat", "rerank": True})
    assert r.status_code == 422 and "`rerank`" in r.json()["error"]["message"], r.text
    assert "--reranker" in r.json()["error"]["message"]
