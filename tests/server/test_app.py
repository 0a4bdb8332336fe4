"""The routes on a live server (tiny model): vectors equal direct encode, normalization
follows the model, limits answer at once with JSON errors, timing headers everywhere."""
from __future__ import annotations

import base64
import threading
import time

import httpx
import numpy as np
import pytest

from sentembed.server import ServerConfig, create_app

TEXTS = ["A man is playing a guitar.", "A woman slices an onion.", "", "Dogs run in the park!"]
TIMING = ("x-total-time", "x-queue-time", "x-inference-time", "x-tokenization-time")


@pytest.fixture(scope="module")
def server(tiny_encoder, live_server):
    with live_server(create_app(tiny_encoder, config=ServerConfig(max_client_batch_size=64))) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


def test_openai_route_equals_encode(server, tiny_encoder):
    r = server.post("/v1/embeddings", json={"input": TEXTS, "model": "x"})
    assert r.status_code == 200, r.text
    body = r.json()
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    np.testing.assert_allclose(got, tiny_encoder.encode(TEXTS), atol=1e-5)
    assert body["usage"]["prompt_tokens"] == sum(tiny_encoder.count_tokens(TEXTS))
    for name in TIMING:
        assert float(r.headers[name]) >= 0


def test_openai_single_string_base64_and_dimensions(server, tiny_encoder):
    r = server.post("/v1/embeddings", json={"input": TEXTS[0], "encoding_format": "base64", "dimensions": 8})
    assert r.status_code == 200, r.text
    v = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    full = tiny_encoder.encode(TEXTS[0])[:8]
    np.testing.assert_allclose(v, full / np.linalg.norm(full), atol=1e-5)  # renormalized: the model normalizes
    assert server.post("/v1/embeddings", json={"input": "x", "dimensions": 10_000}).status_code == 422


def test_dot_product_model_is_not_normalized(tiny_model_factory, live_server):
    import sentembed

    enc = sentembed.load(str(tiny_model_factory(pooling="cls", normalize=False, similarity="dot")), device="cpu")
    assert not enc.normalizes
    with live_server(create_app(enc)) as url:
        r = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS}, timeout=30)
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, enc.encode(TEXTS), atol=1e-5)
        assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)
        r = httpx.post(f"{url}/embed", json={"inputs": TEXTS, "normalize": True}, timeout=30)
        np.testing.assert_allclose(np.linalg.norm(r.json()["embeddings"], axis=1), 1.0, atol=1e-5)
        r = httpx.post(f"{url}/similarity", json={"sources": TEXTS[:2], "targets": TEXTS}, timeout=30)
        np.testing.assert_allclose(r.json()["scores"], enc.similarity(enc.encode(TEXTS[:2]), enc.encode(TEXTS)),
                                   rtol=1e-4, atol=1e-4)
        assert r.json()["similarity_fn"] == "dot"


def test_embed_and_similarity(server, tiny_encoder):
    r = server.post("/embed", json={"inputs": TEXTS, "normalize": False})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["embeddings"], tiny_encoder.encode(TEXTS, normalize=False), atol=1e-5)
    r = server.post("/similarity", json={"sources": "A man plays guitar.", "targets": TEXTS})
    assert r.status_code == 200, r.text
    want = tiny_encoder.similarity(tiny_encoder.encode(["A man plays guitar."]), tiny_encoder.encode(TEXTS))
    np.testing.assert_allclose(r.json()["scores"], want, atol=1e-5)


def test_prompt_name(tiny_model_factory, live_server):
    import sentembed

    enc = sentembed.load(str(tiny_model_factory(prompts={"query": "query: "})), device="cpu")
    with live_server(create_app(enc)) as url:
        r = httpx.post(f"{url}/embed", json={"inputs": TEXTS, "prompt_name": "query"}, timeout=30)
        np.testing.assert_allclose(r.json()["embeddings"], enc.encode(TEXTS, prompt_name="query"), atol=1e-5)
        r = httpx.post(f"{url}/embed", json={"inputs": TEXTS, "prompt_name": "nope"}, timeout=30)
        assert r.status_code == 422 and "nope" in r.json()["error"]["message"]


def test_limits_answer_with_json_errors(server, tiny_encoder):
    too_many = server.post("/embed", json={"inputs": ["x"] * 65})
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == 413
    long_text = "word " * (tiny_encoder.max_seq_length + 10)
    too_long = server.post("/embed", json={"inputs": ["ok", long_text]})
    assert too_long.status_code == 422 and "input 1" in too_long.json()["error"]["message"]
    assert server.post("/embed", json={"inputs": [long_text], "truncate": True}).status_code == 200
    wrong = server.post("/embed", json={"inputs": ["ok", 3]})
    assert wrong.status_code == 422 and "inputs" in wrong.json()["error"]["message"]
    for bad in (b"{not json", b"\xff\xfe{}", b'{"inputs": "\xc3\x28"}'):
        r = server.post("/embed", content=bad, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and "error" in r.json(), (bad, r.text)
        assert "x-total-time" in r.headers
    surrogate = server.post("/embed", content=b'{"inputs": ["a", "\\ud800"]}',
                            headers={"content-type": "application/json"})
    assert surrogate.status_code == 422 and "item 1" in surrogate.text
    assert server.get("/nowhere").status_code == 404
    assert "x-total-time" in server.get("/nowhere").headers


def test_payload_too_large(live_server, fake_encoder):
    with live_server(create_app(fake_encoder(), config=ServerConfig(max_body_bytes=1000))) as url:
        r = httpx.post(f"{url}/embed", json={"inputs": ["x" * 2000]}, timeout=10)
        assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"

        def chunks():  # no Content-Length: the guard counts as it reads
            yield b'{"inputs": ["'
            for _ in range(20):
                yield b"y" * 100
            yield b'"]}'

        r = httpx.post(f"{url}/embed", content=chunks(), headers={"content-type": "application/json"}, timeout=10)
        assert r.status_code == 413


def test_queue_full_is_429_at_once(live_server, fake_encoder):
    gate = threading.Event()
    enc = fake_encoder(gate=gate)
    with live_server(create_app(enc, config=ServerConfig(max_queue_items=4))) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/embed", json={"inputs": ["a"] * 5}).status_code == 429
            # Hold the model on one batch, fill the queue, then one more input is refused.
            busy = threading.Thread(target=lambda: client.post("/embed", json={"inputs": ["first"]}))
            busy.start()
            while not enc.calls:
                time.sleep(0.005)
            waiting = threading.Thread(target=lambda: client.post("/embed", json={"inputs": ["b"] * 4}))
            waiting.start()
            for _ in range(500):
                if "sentembed_queue_depth 4.0" in client.get("/metrics").text:
                    break
                time.sleep(0.01)
            r = client.post("/embed", json={"inputs": ["c"]})
            gate.set()
            busy.join(10)
            waiting.join(10)
            assert r.status_code == 429 and r.json()["error"]["type"] == "queue_full"
            assert float(r.headers["x-total-time"]) < 1000


def test_api_key_enforced(live_server, fake_encoder):
    with live_server(create_app(fake_encoder(), config=ServerConfig(api_key="s3cret"))) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/health").status_code == 200  # probes need no key
            for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": "s3cre"}):
                r = client.post("/embed", json={"inputs": ["a"]}, headers=headers)
                assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized", headers
                assert "x-total-time" in r.headers
            assert client.get("/metrics").status_code == 401
            assert client.post("/embed", json={"inputs": ["a"]}, headers={"authorization": "Bearer s3cret"}).status_code == 200
            assert client.post("/embed", json={"inputs": ["a"]}, headers={"x-api-key": "s3cret"}).status_code == 200


def test_info_health_metrics(server, tiny_encoder):
    info = server.get("/info").json()
    assert info["dimension"] == tiny_encoder.dimension and info["normalizes"] is True
    assert info["max_seq_length"] == tiny_encoder.max_seq_length
    assert server.get("/health").json() == {"status": "ok"}
    server.post("/embed", json={"inputs": TEXTS})
    text = server.get("/metrics").text
    for name in ("sentembed_requests_total", "sentembed_request_duration_seconds", "sentembed_batch_size",
                 "sentembed_queue_depth", "sentembed_input_tokens_total"):
        assert name in text
    assert 'route="/embed",status="200"' in text
