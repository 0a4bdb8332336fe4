"""Prometheus metrics of one server: requests, latency, batch size, queue depth, tokens, and
usage by caller (labelled by the key's name, never the key).

Each app gets a registry of its own, so several servers (tests, benchmarks) can live in one
process without clashing on the global registry."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sentembed.server.batcher import BatchStats

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKENS = (16, 64, 256, 1024, 4096, 16384, 65536)


class Metrics:
    """The collectors, and the two callbacks the app and the batcher feed them through."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("sentembed_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram(
            "sentembed_request_duration_seconds", "Time from request to answer", ["route"], buckets=_LATENCY, registry=r
        )
        self.queue_time = Histogram(
            "sentembed_queue_duration_seconds", "Time inputs waited for the model", buckets=_LATENCY, registry=r
        )
        self.batch_size = Histogram("sentembed_batch_size", "Inputs per model batch", buckets=_SIZES, registry=r)
        self.batch_tokens = Histogram("sentembed_batch_tokens", "Input tokens per model batch", buckets=_TOKENS, registry=r)
        self.inference_time = Histogram(
            "sentembed_batch_inference_seconds", "Model time of one batch", buckets=_LATENCY, registry=r
        )
        self.tokens = Counter("sentembed_input_tokens", "Input tokens embedded (after truncation)", registry=r)
        self.inputs = Counter("sentembed_inputs", "Input texts embedded", registry=r)
        self.queue_depth = Gauge("sentembed_queue_depth", "Inputs waiting in the queue", registry=r)
        self.rejected = Counter("sentembed_rejected", "Requests refused by a limit", ["reason"], registry=r)
        self.usage_tokens = Counter("sentembed_usage_tokens", "Input tokens served, by API key name", ["key"],
                                    registry=r)
        self.usage_requests = Counter("sentembed_usage_requests", "Embedding requests served, by API key name",
                                      ["key"], registry=r)
        self.rate_limited = Counter("sentembed_rate_limited", "Requests refused by the rate limit, by API key name",
                                    ["key"], registry=r)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.size)
        self.batch_tokens.observe(stats.tokens)
        self.inference_time.observe(stats.seconds)
        self.tokens.inc(stats.tokens)
        self.inputs.inc(stats.size)

    def observe_served(self, key: str, tokens: int) -> None:
        self.usage_tokens.labels(key).inc(tokens)
        self.usage_requests.labels(key).inc()

    def observe_rate_limited(self, key: str) -> None:
        self.rate_limited.labels(key).inc()
        self.rejected.labels("rate_limited").inc()

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self, queue_depth: int) -> bytes:
        self.queue_depth.set(queue_depth)
        return generate_latest(self.registry)
