"""Fairness under load: 31 clients, each with its own API key, send 1-16 STS-B sentences a
request, alone and then beside a 32nd client that floods (8 streams of 64 texts of a window's
length each, sent again as soon as answered, Retry-After ignored: without a limit it holds
about 20 times the others' tokens in the queue). With a per-key rate limit the others' p99 latency
stays within 2x of the load without the flood, no request of theirs is refused, and the usage
per key adds up to the tokens served."""
from __future__ import annotations

import asyncio
import random
import re
import time

import httpx
import numpy as np
import pytest

from sentembed.server import ServerConfig, create_app

CLIENTS, REQUESTS, FLOOD_STREAMS = 31, 10, 8


@pytest.fixture(scope="module")
def long_tiny_encoder(tiny_model_factory):
    """The tiny tokenizer cuts words finely (STS-B sentences up to ~120 tokens): a window that holds them all."""
    import sentembed

    return sentembed.load(str(tiny_model_factory(max_seq_length=256)), device="cpu")


def _keys_file(tmp_path) -> tuple[str, list[str]]:
    keys = [f"sk-test-{i:02d}-{random.Random(i).getrandbits(64):016x}" for i in range(CLIENTS + 1)]
    file = tmp_path / "keys.txt"
    file.write_text("".join(f"{key} client-{i:02d}\n" for i, key in enumerate(keys)))
    return str(file), keys


async def _client(url: str, key: str, seed: int, sentences: list[str], latencies: list[float],
                  served: list[int], statuses: list[int]) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(REQUESTS):
            start = time.perf_counter()
            r = await client.post("/v1/embeddings", json={"input": rng.sample(sentences, rng.randint(1, 16))})
            latencies.append(time.perf_counter() - start)
            statuses.append(r.status_code)
            if r.status_code == 200:
                served.append(r.json()["usage"]["total_tokens"])


async def _flood(url: str, key: str, sentences: list[str], stop: asyncio.Event, served: list[int],
                 statuses: list[int]) -> None:
    rng = random.Random(999)
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        while not stop.is_set():
            texts = [" ".join(rng.sample(sentences, 12)) for _ in range(64)]
            r = await client.post("/embed", json={"inputs": texts, "truncate": True})
            statuses.append(r.status_code)
            if r.status_code == 200:
                served.append(r.json()["tokens"])
            else:
                await asyncio.sleep(0.005)  # hostile: Retry-After ignored, a breath to let the loop run


def _run(url: str, keys: list[str], sentences: list[str], flood: bool) -> dict:
    latencies: list[float] = []
    served: list[int] = []
    statuses: list[int] = []
    flood_served: list[int] = []
    flood_statuses: list[int] = []

    async def main() -> None:
        stop = asyncio.Event()
        flooders = [asyncio.create_task(_flood(url, keys[CLIENTS], sentences, stop, flood_served, flood_statuses))
                    for _ in range(FLOOD_STREAMS if flood else 0)]
        if flood:
            await asyncio.sleep(1.0)  # the flood is on before the others start
        await asyncio.gather(*(_client(url, keys[i], i, sentences, latencies, served, statuses)
                               for i in range(CLIENTS)))
        stop.set()
        await asyncio.gather(*flooders)

    start = time.perf_counter()
    asyncio.run(main())
    return {"p99": float(np.percentile(latencies, 99)), "p50": float(np.percentile(latencies, 50)),
            "seconds": time.perf_counter() - start, "served": served, "statuses": statuses,
            "flood_served": flood_served, "flood_statuses": flood_statuses}


def _metric(metrics: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", metrics, re.M).group(1))


def test_one_flooding_key_does_not_starve_the_others(long_tiny_encoder, stsb_sentences, live_server, tmp_path):
    file, keys = _keys_file(tmp_path)
    sentences = stsb_sentences[:800]
    config = ServerConfig(api_keys_file=file, api_key="sk-test-admin")
    with live_server(create_app(long_tiny_encoder, config=config)) as url:
        alone = _run(url, keys, sentences, flood=False)
    assert set(alone["statuses"]) == {200}
    rate = sum(alone["served"]) / alone["seconds"] / 8  # an eighth of what the server served
    config = ServerConfig(api_keys_file=file, api_key="sk-test-admin", rate_limit=rate, rate_burst=rate / 2)
    with live_server(create_app(long_tiny_encoder, config=config)) as url:
        flooded = _run(url, keys, sentences, flood=True)
        usage = httpx.get(f"{url}/usage", headers={"Authorization": "Bearer sk-test-admin"}, timeout=30).json()
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer sk-test-admin"}, timeout=30).text
    print(f"rate limit {rate:.0f} tokens/s a key; p99 alone {alone['p99']:.3f} s, beside the flood "
          f"{flooded['p99']:.3f} s; flood answered {len(flooded['flood_served'])} x 200, "
          f"{flooded['flood_statuses'].count(429)} x 429")
    assert set(flooded["statuses"]) == {200}  # the others are never refused
    assert flooded["flood_statuses"].count(429) > 0 and len(flooded["flood_served"]) > 0
    assert flooded["p99"] <= 2 * alone["p99"]
    # Usage per key adds up to the tokens served: to each client, and in all to what the model ran.
    by_key = {name: u["tokens"] for name, u in usage["keys"].items()}
    assert by_key[f"client-{CLIENTS:02d}"] == sum(flooded["flood_served"])
    assert sum(by_key.values()) == sum(flooded["served"]) + sum(flooded["flood_served"])
    assert sum(by_key.values()) == _metric(metrics, "sentembed_input_tokens_total")
    assert sum(by_key.values()) == sum(float(v) for v in re.findall(r'^sentembed_usage_tokens_total\{key="[^"]+"\} (\S+)$',
                                                                    metrics, re.M))
