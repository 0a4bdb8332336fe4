"""The int8 path served: 32 concurrent clients send texts of mixed lengths, so the server's
forward passes differ in shape from one another and from offline encode's, and every vector
they get back is the one offline int8 `encode` gives (cosine >= 0.99999); /info says int8."""
from __future__ import annotations

import random

import httpx
import numpy as np
import pytest

import sentembed
from sentembed.backends.int8 import Int8Runner, int8_supported
from sentembed.server import create_app
from support import TINY_WORDS, embed_concurrently, mean_batch_size

CLIENTS, REQUESTS = 32, 4

pytestmark = pytest.mark.skipif(not int8_supported(), reason="no int8 products (torch._int_mm) in this torch build")


@pytest.fixture(scope="module")
def int8_pair(tiny_model_factory):
    """The served encoder and an offline one, both int8, loaded apart from the same directory.
    Eager, as the other int8 tests on tiny models: compiling the graph would take a minute."""
    path = str(tiny_model_factory(max_seq_length=256))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SENTEMBED_COMPILE", "0")
        return (sentembed.load(path, device="cpu", quantize="int8"),
                sentembed.load(path, device="cpu", quantize="int8"))


def _mixed_texts(count: int) -> list[str]:
    """Short, middling and long texts (1 to 240 tokens of the tiny vocabulary, a word a token)."""
    rng = random.Random(0)
    spans = [(1, 8), (20, 60), (100, 240)]
    texts = (" ".join(rng.choices(TINY_WORDS, k=rng.randint(*rng.choice(spans)))) for _ in range(count))
    return list(dict.fromkeys(texts))


def test_served_int8_vectors_are_offline_int8_encode(int8_pair, live_server):
    served, offline = int8_pair
    texts = _mixed_texts(300)
    shapes: list[tuple[int, int]] = []
    hook = served.pipeline.transformer.mpnet.register_forward_hook(
        lambda _module, args, _out: shapes.append(tuple(args[0].shape)))
    try:
        with live_server(create_app(served)) as url:
            errors, got = embed_concurrently(url, texts, CLIENTS, REQUESTS)
            info = httpx.get(f"{url}/info", timeout=30).json()
            metrics = httpx.get(f"{url}/metrics", timeout=30).text
    finally:
        hook.remove()
    assert errors == 0
    assert (info["backend"], info["quantization"]) == ("torch", "int8")
    assert info["dtype"] == str(served.pipeline.transformer.mpnet.act_dtype).removeprefix("torch.")
    assert isinstance(offline.pipeline.transformer.mpnet, Int8Runner)
    # Batches of many inputs and many shapes: the server cut the queue its own way.
    assert mean_batch_size(metrics) > 1
    assert len(set(shapes)) > 10, shapes
    sent = sorted({text for text, _ in got})
    want = dict(zip(sent, offline.encode(sent)))  # offline: encode's own batches of up to 32
    cosines = np.array([float(v @ want[t]) / float(np.linalg.norm(v) * np.linalg.norm(want[t])) for t, v in got])
    assert cosines.min() >= 0.99999, cosines.min()
