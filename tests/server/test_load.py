"""Load: 32 concurrent clients x 20 requests of 1-16 STS-B sentences. No errors, every vector
equal to direct encode within 1e-5, and batches of more than one input on average."""
from __future__ import annotations


import httpx
import numpy as np
import pytest

from sentembed.server import create_app
from support import benchmark_script, embed_concurrently, mean_batch_size

CLIENTS, REQUESTS = 32, 20


def _run_load(live_server, encoder, sentences: list[str], clients: int = CLIENTS,
              requests: int = REQUESTS) -> tuple[int, dict, str]:
    with live_server(create_app(encoder)) as url:
        errors, served = embed_concurrently(url, sentences, clients, requests)
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    return errors, dict(served), metrics


@pytest.fixture(scope="module")
def long_tiny_encoder(tiny_model_factory):
    """The tiny tokenizer cuts words finely (STS-B sentences up to ~120 tokens): a window that holds them all."""
    import sentembed

    return sentembed.load(str(tiny_model_factory(max_seq_length=256)), device="cpu")


def test_load_tiny_model(long_tiny_encoder, stsb_sentences, live_server):
    tiny_encoder = long_tiny_encoder
    errors, got, metrics = _run_load(live_server, tiny_encoder, stsb_sentences[:800])
    assert errors == 0
    texts = list(got)
    want = tiny_encoder.encode(texts)
    np.testing.assert_allclose(np.stack([got[t] for t in texts]), want, atol=1e-5)
    assert mean_batch_size(metrics) > 1
    assert f'sentembed_requests_total{{route="/v1/embeddings",status="200"}} {CLIENTS * REQUESTS}.0' in metrics


@pytest.mark.real_model
@pytest.mark.slow
def test_load_real_model_small(real_encoder, stsb_sentences, live_server):
    """The same on all-mpnet-base-v2, at a scale 2 cores finish in seconds: 8 clients x 3 requests
    (about 200 sentences); the full 32 x 20 runs in benchmarks/serve.py."""
    errors, got, metrics = _run_load(live_server, real_encoder, stsb_sentences[:200], clients=8, requests=3)
    assert errors == 0
    texts = list(got)
    np.testing.assert_allclose(np.stack([got[t] for t in texts]), real_encoder.encode(texts), atol=1e-5)
    assert mean_batch_size(metrics) > 1


def test_benchmark_load_generators_read_what_the_server_sent(tiny_encoder, stsb_sentences, live_server):
    """benchmarks/serve.py's lean client parses its HTTP by hand: it gets the vectors httpx gets,
    which are encode's, and an error answer stops it with its status."""
    serve = benchmark_script("serve")
    plans = [[stsb_sentences[i:i + 5], stsb_sentences[i + 5:i + 6]] for i in range(0, 60, 6)]
    got = {}
    with live_server(create_app(tiny_encoder)) as url:
        for kind in ("lean", "httpx"):
            got[kind] = {}
            _, latencies = serve.load(url, plans, "base64", got[kind], kind=kind)
            assert len(latencies) == 20
        with pytest.raises(RuntimeError, match="413"):  # more inputs than max_client_batch_size
            serve.load(url, [[["a"] * 2049]], "base64")
    texts = list(got["lean"])
    assert len(texts) == 60 and got["httpx"].keys() == got["lean"].keys()
    # batches of other shapes round otherwise in the last bits
    np.testing.assert_allclose(np.stack([got["lean"][t] for t in texts]), np.stack([got["httpx"][t] for t in texts]),
                               atol=1e-6)
    np.testing.assert_allclose(np.stack([got["lean"][t] for t in texts]), tiny_encoder.encode(texts), atol=1e-5)
