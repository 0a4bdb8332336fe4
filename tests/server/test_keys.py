"""Several API keys (a keys file, read again when it changes), usage per key name in /usage
and /metrics (never the key), and per-key rate limits answered 429 with Retry-After."""
from __future__ import annotations

import os
import time

import httpx
import pytest

from sentembed.server import ServerConfig, create_app
from sentembed.server.keys import KeyRing, KeysError, parse_keys
from sentembed.server.quota import Quota


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_file_names_and_errors(tmp_path):
    callers = parse_keys("# clients\nsk-a team-a\n\nsk-b   # no name\nsk-c team-a\n", "keys.txt")
    names = sorted(c.name for c in callers.values())
    assert names[1:] == ["team-a", "team-a"] and names[0].startswith("key-") and "sk-b" not in names[0]
    for text, wanted in (("k1 a b\n", "keys.txt:1"), ("k1 x\nk1 y\n", "keys.txt:2: this key is already"),
                         ("k1 admin\n", "reserved"), ("k1 bad/name\n", "name 'bad/name'")):
        with pytest.raises(KeysError, match=wanted):
            parse_keys(text, "keys.txt")
    for admin_key in ("", "  "):
        with pytest.raises(KeysError, match="SENTEMBED_API_KEY"):
            KeyRing(admin_key=admin_key)
    with pytest.raises(ValueError, match="SENTEMBED_API_KEY"):
        create_app(object(), config=ServerConfig(api_key=""))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    with pytest.raises(KeysError, match="no keys"):
        KeyRing(file=empty)
    with pytest.raises(KeysError, match="cannot read"):
        KeyRing(file=tmp_path / "missing.txt")


def test_rate_limit_bucket():
    quota = Quota(rate=100, burst=50)
    assert quota.admit("a", 80) == 0.0  # a positive balance lets a request larger than the burst in
    wait = quota.admit("a", 10)
    assert 0.25 < wait <= 0.31  # 30 tokens of debt at 100 a second
    assert quota.admit("b", 10) == 0.0  # another name has its own bucket
    quota.settle("a", 80, 40)  # it cost less than guessed: 40 back, out of debt
    assert quota.wait("a") == 0.0
    quota.give_back("b", 10)
    assert quota.usage() == {"a": {"tokens": 40, "requests": 1, "rate_limited": 1}}


@pytest.fixture
def keyed_server(fake_encoder, live_server, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-alpha-1 alpha\nsk-beta-2 beta\n")
    config = ServerConfig(api_key="sk-admin", api_keys_file=str(keys), rate_limit=100, rate_burst=40)
    app = create_app(fake_encoder(max_seq_length=64), config=config)
    with live_server(app) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, keys, app


def test_keys_usage_and_metrics(keyed_server):
    client, keys, _ = keyed_server
    assert client.post("/embed", json={"inputs": ["a b"]}).status_code == 401
    assert client.post("/embed", json={"inputs": ["a b"]}, headers=_auth("sk-wrong")).status_code == 401
    served = {"alpha": 0, "beta": 0}
    for key, name, texts in (("sk-alpha-1", "alpha", ["one two three"]), ("sk-beta-2", "beta", ["a", "b c"]),
                             ("sk-alpha-1", "alpha", ["four"])):
        r = client.post("/v1/embeddings", json={"input": texts}, headers=_auth(key))
        assert r.status_code == 200, r.text
        served[name] += r.json()["usage"]["total_tokens"]
    own = client.get("/usage", headers=_auth("sk-beta-2")).json()
    assert own["keys"] == {"beta": {"tokens": served["beta"], "requests": 1, "rate_limited": 0}}
    assert own["rate_limit"] == {"tokens_per_second": 100, "burst": 40}
    every = client.get("/usage", headers=_auth("sk-admin")).json()["keys"]
    assert {name: u["tokens"] for name, u in every.items()} == served
    metrics = client.get("/metrics", headers=_auth("sk-admin")).text
    assert f'sentembed_usage_tokens_total{{key="alpha"}} {served["alpha"]}.0' in metrics
    assert f'sentembed_usage_requests_total{{key="alpha"}} 2.0' in metrics
    assert "sk-alpha" not in metrics and "sk-beta" not in metrics and "sk-admin" not in metrics


def test_keys_file_is_read_again_when_it_changes(keyed_server):
    client, keys, app = keyed_server
    assert client.post("/embed", json={"inputs": ["x"]}, headers=_auth("sk-gamma-3")).status_code == 401
    keys.write_text("sk-gamma-3 gamma\n")  # alpha and beta revoked, gamma added
    stamp = keys.stat().st_mtime_ns + 5_000_000_000
    os.utime(keys, ns=(stamp, stamp))  # a changed mtime, whatever the file system's granularity
    deadline = time.monotonic() + 5
    while client.post("/embed", json={"inputs": ["x"]}, headers=_auth("sk-gamma-3")).status_code != 200:
        assert time.monotonic() < deadline, "the changed keys file was not read again"
        time.sleep(0.2)
    assert client.post("/embed", json={"inputs": ["x"]}, headers=_auth("sk-alpha-1")).status_code == 401
    keys.write_text("sk-alpha-1 alpha\n")  # same size and, here, the same mtime: SIGHUP's reload_soon
    os.utime(keys, ns=(stamp, stamp))
    app.state.service.keys.reload_soon()
    assert client.post("/embed", json={"inputs": ["x"]}, headers=_auth("sk-alpha-1")).status_code == 200
    keys.write_text("broken line with words\n")
    app.state.service.keys.reload_soon()  # a file that does not read keeps the keys read before
    assert client.post("/embed", json={"inputs": ["x"]}, headers=_auth("sk-alpha-1")).status_code == 200


def test_rate_limit_is_429_with_retry_after_per_key(keyed_server):
    client, _, _ = keyed_server
    text = " ".join(["word"] * 30)  # 32 tokens a request against a burst of 40 at 100 a second
    answers = [client.post("/embed", json={"inputs": [text]}, headers=_auth("sk-alpha-1")) for _ in range(3)]
    assert [r.status_code for r in answers[:2]] == [200, 200]
    limited = answers[2]
    assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limited", limited.text
    assert int(limited.headers["retry-after"]) >= 1
    # beta is not held back by alpha's flood, and /usage answers alpha while it waits
    assert client.post("/embed", json={"inputs": [text]}, headers=_auth("sk-beta-2")).status_code == 200
    usage = client.get("/usage", headers=_auth("sk-alpha-1"))
    assert usage.status_code == 200 and usage.json()["keys"]["alpha"]["rate_limited"] == 1
    time.sleep(int(limited.headers["retry-after"]))
    assert client.post("/embed", json={"inputs": [text]}, headers=_auth("sk-alpha-1")).status_code == 200
