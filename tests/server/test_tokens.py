"""Tokens at the edge of the API (tiny model, live server): /tokenize against the reference
tokenizer, token ids on the OpenAI route only when the request says whose they are, readiness
apart from liveness, CORS only when asked for."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from sentembed.server import ServerConfig, create_app
from sentembed.server import tokens
from support import small_tiktoken

TEXTS = ["A man is playing a guitar.", "Dogs run in the park!", "Café ÉTÉ, naïve résumé"]


@pytest.fixture(scope="module")
def server(tiny_encoder, live_server):
    with live_server(create_app(tiny_encoder)) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


@pytest.fixture(scope="module")
def reference_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def test_tokenize_matches_the_reference_tokenizer(server, reference_tokenizer):
    r = server.post("/tokenize", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    for text, found in zip(TEXTS, r.json()):
        want = reference_tokenizer(text, return_offsets_mapping=True)
        assert [t["id"] for t in found] == want["input_ids"]
        specials = set(reference_tokenizer.all_special_ids)
        assert [t["special"] for t in found] == [i in specials for i in want["input_ids"]]
        for token, (start, stop) in zip(found, want["offset_mapping"]):
            if token["special"]:
                assert token["start"] is None and token["stop"] is None
            else:
                assert (token["start"], token["stop"]) == (start, stop)
                assert token["text"] == text[start:stop]
    r = server.post("/tokenize", json={"inputs": TEXTS[0], "add_special_tokens": False})
    assert [t["id"] for t in r.json()[0]] == reference_tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert server.post("/tokenize", json={"inputs": 3}).status_code == 422


def test_the_models_own_ids_when_the_request_says_so(server, tiny_encoder):
    ids = [[t["id"] for t in row] for row in server.post("/tokenize", json={"inputs": TEXTS}).json()]
    r = server.post("/v1/embeddings", json={"input": ids, "input_tokenizer": "model"})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, tiny_encoder.encode(TEXTS), atol=1e-5)
    assert r.json()["usage"]["prompt_tokens"] == sum(map(len, ids))
    r = server.post("/v1/embeddings", json={"input": ids[0], "input_tokenizer": "model", "dimensions": 8})
    full = tiny_encoder.encode(TEXTS[0])[:8]
    np.testing.assert_allclose(r.json()["data"][0]["embedding"], full / np.linalg.norm(full), atol=1e-5)


def test_ids_of_unknown_owner_are_refused_with_the_setting_that_sends_text(server):
    for body in ({"input": [101, 2023, 102]}, {"input": [[101, 2023], [7]]}):
        r = server.post("/v1/embeddings", json=body)
        assert r.status_code == 422, r.text
        message = r.json()["error"]["message"]
        assert "check_embedding_ctx_length=False" in message and "input_tokenizer" in message


def test_the_models_ids_are_checked(server, tiny_encoder):
    vocab = tiny_encoder.tokenizer.fast.get_vocab_size()
    cases = {"outside the vocabulary": [0, vocab, 2], "empty": [[]],
             "too long": [0] * (tiny_encoder.max_seq_length + 1), "negative": [0, -1, 2]}
    for name, ids in cases.items():
        r = server.post("/v1/embeddings", json={"input": ids, "input_tokenizer": "model"})
        assert r.status_code == 422, (name, r.text)
    r = server.post("/v1/embeddings", json={"input": [1, 2], "input_tokenizer": "gpt9_base"})
    assert r.status_code == 422 and "cl100k_base" in r.json()["error"]["message"]


def test_tiktoken_ids_are_decoded_where_the_encoding_is_here(server, tiny_encoder, monkeypatch):
    encoding = small_tiktoken()
    monkeypatch.setattr(tokens, "_encodings", {"cl100k_base": encoding})
    ids = [encoding.encode_ordinary(t) for t in TEXTS]
    r = server.post("/v1/embeddings", json={"input": ids, "input_tokenizer": "cl100k_base"})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, tiny_encoder.encode(TEXTS), atol=1e-5)


def test_tiktoken_ids_without_the_encodings_files_are_refused(server, monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError(f"cannot download {name}")

    monkeypatch.setattr(tokens, "_encodings", {})
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    r = server.post("/v1/embeddings", json={"input": [[1, 2, 3]], "input_tokenizer": "cl100k_base"})
    assert r.status_code == 422
    assert "not available" in r.json()["error"]["message"]
    assert "check_embedding_ctx_length=False" in r.json()["error"]["message"]


def test_ready_is_apart_from_health(fake_encoder, live_server):
    app = create_app(fake_encoder(), config=ServerConfig(api_key="k"))
    from fastapi.testclient import TestClient

    client = TestClient(app)  # outside `with`, the lifespan has not started the batcher: alive, not ready
    assert client.get("/health").status_code == 200
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["error"]["type"] == "not_ready"
    with live_server(app) as url:
        assert httpx.get(f"{url}/ready", timeout=10).json() == {"status": "ready"}  # no key needed, as /health
        assert httpx.get(f"{url}/info", timeout=10).status_code == 401


def test_cors_only_for_the_origins_given(fake_encoder, live_server):
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}
    with live_server(create_app(fake_encoder())) as url:  # off by default
        r = httpx.options(f"{url}/v1/embeddings", headers=preflight, timeout=10)
        assert "access-control-allow-origin" not in r.headers
    config = ServerConfig(api_key="k", cors_origins=("https://app.example",))
    with live_server(create_app(fake_encoder(), config=config)) as url:
        r = httpx.options(f"{url}/v1/embeddings", headers=preflight, timeout=10)  # a preflight carries no key
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = httpx.post(f"{url}/v1/embeddings", json={"input": "x"}, timeout=10,
                       headers={"origin": "https://app.example", "authorization": "Bearer k"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-total-time" in r.headers["access-control-expose-headers"]
        r = httpx.post(f"{url}/v1/embeddings", json={"input": "x"}, timeout=10,
                       headers={"origin": "https://elsewhere.example", "authorization": "Bearer k"})
        assert "access-control-allow-origin" not in r.headers
