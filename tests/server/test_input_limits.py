"""Work per input is bounded: a huge input with `truncate` is cut before it is tokenized, so it
does not hold up the tokenizer pool other requests share; an input past max_input_chars is
refused at once, naming the limit."""
from __future__ import annotations

import asyncio
import statistics
import time

import httpx

from sentembed.server import ServerConfig, create_app

SHORT = {"inputs": ["A man is playing a guitar."]}
BIG = "lorem ipsum dolor sit amet " * 155_000  # about 4 MB


async def _timed(client: httpx.AsyncClient, body: dict) -> float:
    start = time.perf_counter()
    r = await client.post("/embed", json=body)
    assert r.status_code == 200, r.text
    return time.perf_counter() - start


def test_huge_truncated_inputs_do_not_stall_a_short_request(tiny_encoder, live_server):
    config = ServerConfig(max_body_bytes=16 * 1024 * 1024, max_input_chars=8_000_000)
    with live_server(create_app(tiny_encoder, config=config)) as url:
        async def main() -> tuple[float, float]:
            async with httpx.AsyncClient(base_url=url, timeout=120) as client:
                await _timed(client, SHORT)  # warm
                alone = statistics.median([await _timed(client, SHORT) for _ in range(5)])
                big = [asyncio.create_task(_timed(client, {"inputs": [BIG], "truncate": True})) for _ in range(3)]
                beside = []  # short requests, one after another, until the big ones are answered
                while not all(task.done() for task in big):
                    beside.append(await _timed(client, SHORT))
                await asyncio.gather(*big)
                return alone, max(beside)

        alone, beside = asyncio.run(main())
    print(f"short request alone {alone:.3f} s, beside three 4 MB truncated inputs at most {beside:.3f} s")
    # Tokenizing the three whole took seconds (13.6 s on all-mpnet-base-v2 against 0.02 s);
    # cut first, what remains is reading the bodies. A generous bound: the machine is shared.
    assert beside < 20 * alone + 1.0


def test_input_past_max_input_chars_is_413_naming_the_limit(fake_encoder, live_server):
    with live_server(create_app(fake_encoder(), config=ServerConfig(max_input_chars=100))) as url:
        for path, body in (("/embed", {"inputs": ["ok", "x" * 101]}), ("/v1/embeddings", {"input": ["x" * 101]}),
                           ("/embed", {"inputs": ["y" * 101], "truncate": True}), ("/tokenize", {"inputs": "z" * 101})):
            r = httpx.post(f"{url}{path}", json=body, timeout=30)
            assert r.status_code == 413, (path, r.text)
            assert "max_input_chars" in r.json()["error"]["message"], r.text
        assert httpx.post(f"{url}/embed", json={"inputs": ["x" * 100]}, timeout=30).status_code == 200
