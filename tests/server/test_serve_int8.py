"""The int8 path served: 32 concurrent clients send texts of mixed lengths, so the server's
forward passes differ in shape from one another and from offline encode's, and every vector
they get back is the one offline int8 `encode` gives (cosine >= 0.99999); /info says int8."""
from __future__ import annotations

import asyncio
import random
import re

import httpx
import numpy as np
import pytest

import sentembed
from sentembed.backends.int8 import Int8Runner, int8_supported
from sentembed.server import create_app
from support import TINY_WORDS

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


async def _client(url: str, rng: random.Random, texts: list[str], got: list[tuple[str, np.ndarray]]) -> int:
    errors = 0
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for _ in range(REQUESTS):
            batch = rng.sample(texts, rng.randint(1, 16))
            r = await http.post("/v1/embeddings", json={"input": batch})
            if r.status_code != 200:
                errors += 1
                continue
            got += [(text, np.asarray(item["embedding"], np.float32)) for text, item in zip(batch, r.json()["data"])]
    return errors


def test_served_int8_vectors_are_offline_int8_encode(int8_pair, live_server):
    served, offline = int8_pair
    texts = _mixed_texts(300)
    shapes: list[tuple[int, int]] = []
    hook = served.pipeline.transformer.mpnet.register_forward_hook(
        lambda _module, args, _out: shapes.append(tuple(args[0].shape)))
    got: list[tuple[str, np.ndarray]] = []
    try:
        with live_server(create_app(served)) as url:
            async def main() -> list[int]:
                return await asyncio.gather(*(_client(url, random.Random(i), texts, got) for i in range(CLIENTS)))

            errors = sum(asyncio.run(main()))
            info = httpx.get(f"{url}/info", timeout=30).json()
            metrics = httpx.get(f"{url}/metrics", timeout=30).text
    finally:
        hook.remove()
    assert errors == 0
    assert (info["backend"], info["quantization"]) == ("torch", "int8")
    assert info["dtype"] == str(served.pipeline.transformer.mpnet.act_dtype).removeprefix("torch.")
    assert isinstance(offline.pipeline.transformer.mpnet, Int8Runner)
    # Batches of many inputs and many shapes: the server cut the queue its own way.
    total = float(re.search(r"^sentembed_batch_size_sum (\S+)$", metrics, re.M).group(1))
    count = float(re.search(r"^sentembed_batch_size_count (\S+)$", metrics, re.M).group(1))
    assert total / count > 1
    assert len(set(shapes)) > 10, shapes
    sent = sorted({text for text, _ in got})
    want = dict(zip(sent, offline.encode(sent)))  # offline: encode's own batches of up to 32
    cosines = np.array([float(v @ want[t]) / float(np.linalg.norm(v) * np.linalg.norm(want[t])) for t, v in got])
    assert cosines.min() >= 0.99999, cosines.min()
