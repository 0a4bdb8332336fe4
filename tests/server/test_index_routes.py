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
