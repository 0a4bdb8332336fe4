"""POST /rerank in text-embeddings-inference's shape (`texts`) and Cohere's (`documents`):
the cross-encoder's scores best first, and limits answered at once, naming the field."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
from support import build_cross_encoder

from sentembed.cross_encoder import load_cross_encoder
from sentembed.server.app import create_app
from sentembed.server.limits import ServerConfig

QUERY = "a man is eating food"
TEXTS = ["a man is eating a meal", "the dog runs in the park", "stocks fell today", "a woman plays the guitar"]


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    return load_cross_encoder(build_cross_encoder(tmp_path_factory.mktemp("rerank")), device="cpu")


@pytest.fixture(scope="module")
def client(reranker, live_server, fake_encoder):
    app = create_app(fake_encoder(), config=ServerConfig(max_client_batch_size=64), reranker=reranker)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def test_tei_shape(client, reranker):
    r = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "return_text": True})
    assert r.status_code == 200, r.text
    expected = reranker.predict([(QUERY, t) for t in TEXTS])
    body = r.json()
    assert [h["index"] for h in body] == list(np.argsort(-expected, kind="stable"))
    assert all(h["text"] == TEXTS[h["index"]] and h["score"] == pytest.approx(expected[h["index"]], abs=1e-6)
               for h in body)
    raw = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "raw_scores": True, "top_n": 2}).json()
    logits = reranker.predict([(QUERY, t) for t in TEXTS], activation=False)
    assert len(raw) == 2 and "text" not in raw[0]
    assert raw[0]["score"] == pytest.approx(float(logits.max()), abs=1e-6)


def test_cohere_shape(client, reranker):
    docs = [TEXTS[0], {"text": TEXTS[1]}, TEXTS[2]]
    r = client.post("/rerank", json={"query": QUERY, "documents": docs, "top_n": 2, "return_documents": True,
                                     "model": "rerank-x"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["model"] == "rerank-x" and len(body["results"]) == 2
    expected = reranker.predict([(QUERY, t) for t in TEXTS[:3]])
    best = int(np.argmax(expected))
    assert body["results"][0] == {"index": best, "relevance_score": pytest.approx(float(expected[best]), abs=1e-6),
                                  "document": {"text": TEXTS[best]}}


@pytest.mark.parametrize("payload, status, needle", [
    ({"query": QUERY, "texts": ["t"] * 10_000}, 413, "`texts` holds 10000 texts"),
    ({"query": QUERY, "documents": ["t"] * 65}, 413, "`documents` holds 65 texts; at most 64"),
    ({"query": QUERY, "texts": []}, 422, "texts"),
    ({"query": QUERY, "texts": TEXTS, "top_n": 0}, 422, "top_n"),
    ({"query": QUERY, "texts": TEXTS, "top_n": -3}, 422, "top_n"),
    ({"query": QUERY}, 422, "exactly one of `texts`"),
    ({"query": QUERY, "texts": TEXTS, "documents": TEXTS}, 422, "exactly one of `texts`"),
    ({"query": QUERY, "texts": [1, 2]}, 422, "texts"),
    ({"texts": TEXTS}, 422, "query"),
    ({"query": QUERY, "texts": TEXTS, "label": "nope"}, 422, "`label`"),
])
def test_limits_and_bad_input_name_the_field(client, payload, status, needle):
    r = client.post("/rerank", json=payload)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"] or needle in r.text


def test_no_reranker_no_route(live_server, fake_encoder):
    with live_server(create_app(fake_encoder())) as url:
        assert httpx.post(f"{url}/rerank", json={"query": "q", "texts": ["t"]}).status_code == 404
