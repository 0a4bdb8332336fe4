"""Fuzzing: cases generated from the server's own OpenAPI spec (valid and invalid, by
schemathesis), then raw bytes and random JSON (hypothesis), then the named hard cases:
malformed JSON, wrong types, huge strings, invalid UTF-8, 10,000-item lists. Never a 5xx.
Bounded: a fixed number of examples per route, no shrinking, no deadline."""
from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentembed.server import ServerConfig, create_app

schemathesis = pytest.importorskip("schemathesis")

POSTS = ["/v1/embeddings", "/embed", "/similarity"]
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def url(tiny_encoder, live_server):
    # A small body limit keeps the huge cases quick without changing what is tested.
    with live_server(create_app(tiny_encoder, config=ServerConfig(max_body_bytes=1 << 20))) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def api_schema(url):
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


# GET routes take no input: there is nothing invalid to make for them.
OPERATIONS = [("POST", p, m) for p in POSTS for m in ("positive", "negative")] + [
    ("GET", p, "positive") for p in ("/info", "/health", "/metrics")]


@pytest.mark.parametrize("method,path,mode", OPERATIONS)
def test_openapi_cases_never_5xx(api_schema, url, method, path, mode):
    """Cases schemathesis draws from the spec: valid ones (which must work) and invalid ones."""
    from schemathesis.generation import GenerationMode

    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

    @settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case):
        r = case.call(base_url=url, timeout=60)
        assert r.status_code < 500, (case.body, r.text[:300])
        if mode == "positive" and path != "/v1/embeddings" and r.status_code != 200:
            # a valid body may still break a limit or name an unknown prompt, never anything else
            assert r.status_code in (413, 422), (case.body, r.text[:300])

    check()


@FUZZ
@given(body=st.binary(max_size=300), route=st.sampled_from(POSTS))
def test_random_bytes_are_4xx(client, body, route):
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    assert r.status_code == 200 or "error" in r.json()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["input", "inputs", "sources", "targets", "model", "dimensions", "truncate",
                         "normalize", "encoding_format", "prompt_name", "x"]), inner, max_size=5),
    max_leaves=20,
)


@FUZZ
@given(body=JSON, route=st.sampled_from(POSTS))
def test_random_json_is_never_5xx(client, body, route):
    r = client.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code < 500, (body, r.text)


@pytest.mark.parametrize("route", POSTS)
def test_named_hard_cases(client, route):
    field = {"/v1/embeddings": "input", "/embed": "inputs", "/similarity": "sources"}[route]
    extra = {"targets": ["b"]} if route == "/similarity" else {}
    cases = {
        "malformed": (b'{"' + field.encode() + b'": ["a", ', 422),
        "truncated utf-8": (b'{"' + field.encode() + b'": "\xe2\x82"}', 400),
        "latin-1 bytes": (b'{"' + field.encode() + b'": "caf\xe9"}', 400),
        "lone surrogate": (json.dumps({field: "\ud800", **extra}).encode(), 422),
        "wrong type": (json.dumps({field: {"a": 1}, **extra}).encode(), 422),
        "list of numbers": (json.dumps({field: [1, 2, 3], **extra}).encode(), 422),
        "10,000 items": (json.dumps({field: ["a b"] * 10_000, **extra}).encode(), 413),
        "huge string": (json.dumps({field: "word " * 150_000, **extra}).encode(), 422),  # under the body limit
        "huge body": (json.dumps({field: "x" * (2 << 20), **extra}).encode(), 413),
        "not an object": (b"[1, 2]", 422),
        "empty body": (b"", 422),
    }
    for name, (body, status) in cases.items():
        r = client.post(route, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        assert r.json()["error"]["code"] == status, name
        assert "x-total-time" in r.headers, name


# ----------------------------------------------------------------- the index routes
INDEX_POSTS = ["/search", "/index/add", "/index/delete", "/index/compact"]


@pytest.fixture(scope="module")
def index_url(tiny_encoder, live_server, tmp_path_factory):
    from sentembed.search.index import Index

    index = Index.create(tmp_path_factory.mktemp("fuzz") / "index", tiny_encoder)
    index.add(["a cat sat on the mat", "stocks fell today", "rain is expected"], ids=["cat", "stocks", "rain"],
              metadata=[{"t": "pets", "n": 1}, {"t": "money", "n": 2}, None])
    config = ServerConfig(max_body_bytes=1 << 20, max_search_hits=2000)
    with live_server(create_app(tiny_encoder, index, config=config)) as base:
        yield base


# /index/compact takes no input: there is nothing invalid to make for it.
@pytest.mark.parametrize("path,mode", [(p, m) for p in INDEX_POSTS for m in ("positive", "negative")
                                       if (p, m) != ("/index/compact", "negative")])
def test_index_routes_openapi_cases_never_5xx(index_url, path, mode):
    from schemathesis.generation import GenerationMode

    operation = schemathesis.openapi.from_url(f"{index_url}/openapi.json")[path]["POST"]

    @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
    def check(case):
        r = case.call(base_url=index_url, timeout=60)
        assert r.status_code < 500, (case.body, r.text[:300])

    check()


SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
METADATA = st.none() | st.dictionaries(st.sampled_from(["t", "n", "x"]), st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6), max_size=3)
WHERE = st.none() | st.dictionaries(st.sampled_from(["t", "n", "x"]), SCALAR | st.dictionaries(
    st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$bogus"]),
    SCALAR | st.lists(SCALAR, max_size=3), max_size=2), max_size=2)


def test_index_routes_stateful_never_5xx(index_url):
    """add -> search -> delete (-> compact) in random orders with random bodies: no 5xx, and no
    search ever returns an id deleted before it."""
    from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

    client = httpx.Client(base_url=index_url, timeout=60)

    class IndexRoutes(RuleBasedStateMachine):
        @initialize()
        def start(self):
            self.added: set[str] = set()
            self.deleted: set[str] = set()

        def post(self, path, body):
            r = client.post(path, json=body)
            assert r.status_code < 500, (path, body, r.text[:300])
            return r

        @rule(texts=st.lists(st.text(max_size=30), min_size=1, max_size=4), metadata=st.lists(METADATA, max_size=4),
              explicit=st.booleans())
        def add(self, texts, metadata, explicit):
            body = {"texts": texts}
            if metadata:
                body["metadata"] = (metadata * len(texts))[: len(texts)]
            if explicit:
                body["ids"] = [f"id{len(self.added) + i}" for i in range(len(texts))]
            r = self.post("/index/add", body)
            if r.status_code == 200:
                self.added |= set(r.json()["ids"])
                self.deleted -= set(r.json()["ids"])

        @rule(query=st.text(max_size=20) | st.lists(st.text(max_size=10), min_size=1, max_size=3),
              top_k=st.integers(-2, 1200), where=WHERE, mode=st.sampled_from([None, "dense", "lexical", "hybrid"]))
        def search(self, query, top_k, where, mode):
            r = self.post("/search", {"query": query, "top_k": top_k, "where": where, "mode": mode})
            if r.status_code == 200:
                returned = {h["id"] for hits in r.json()["results"] for h in hits}
                assert not returned & self.deleted, returned & self.deleted

        @rule(data=st.data())
        def delete(self, data):
            ids = data.draw(st.lists(st.sampled_from(sorted(self.added)) if self.added else st.text(max_size=5),
                                     min_size=1, max_size=3))
            r = self.post("/index/delete", {"ids": ids})
            if r.status_code == 200:
                self.added -= set(ids)
                self.deleted |= set(ids)

        @rule()
        def compact(self):
            assert self.post("/index/compact", {}).status_code == 200

    run_state_machine_as_test(IndexRoutes, settings=settings(max_examples=15, stateful_step_count=12, deadline=None,
                                                             derandomize=True, suppress_health_check=list(HealthCheck)))
    client.close()
