"""Per-caller token usage and rate limits, so one client cannot starve the others.

Each caller name (keys.py) has a token bucket: it fills at `rate` tokens a second up to
`burst`. A request is let in while the bucket is above zero and takes its estimated tokens
(characters / CHARS_PER_TOKEN, before tokenizing) at once, so concurrent requests of one
caller cannot all slip through on the same balance; once served, the estimate is settled to
the tokens it really cost, and a request refused later gives its estimate back. The bucket
may go below zero (a request larger than the burst still passes from a positive balance):
the caller then waits until it is paid back, and is told how long in `Retry-After`. Over any
stretch of time a caller gets at most about `rate` tokens a second plus one burst.

Usage counts what was served, per name: tokens (as the answers' `usage` reports them),
requests, and requests refused by the rate limit.

    quota = Quota(rate=2000, burst=4000)
    quota.admit("team-a", 150)       # 0.0: let in (150 taken); else the seconds to wait
    quota.settle("team-a", 150, 142) # served: 142 tokens counted, 8 given back
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Usage:
    tokens: int = 0
    requests: int = 0
    rate_limited: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"tokens": self.tokens, "requests": self.requests, "rate_limited": self.rate_limited}


class _Bucket:
    def __init__(self, burst: float, now: float) -> None:
        self.level, self.updated = burst, now


class Quota:
    """Token buckets and usage by caller name; `rate` None counts usage and limits nothing.

    on_served(name, tokens) and on_limited(name) feed the metrics."""

    def __init__(self, rate: float | None = None, burst: float | None = None,
                 on_served: Callable[[str, int], None] | None = None,
                 on_limited: Callable[[str], None] | None = None) -> None:
        if rate is not None and not rate > 0:
            raise ValueError(f"rate limit must be more than 0 tokens a second, got {rate}")
        if burst is not None and not burst > 0:
            raise ValueError(f"rate burst must be more than 0 tokens, got {burst}")
        self.rate = rate
        self.burst = (burst if burst is not None else rate) if rate is not None else None
        self.on_served, self.on_limited = on_served, on_limited
        self._buckets: dict[str, _Bucket] = {}
        self._usage: dict[str, Usage] = {}
        self._lock = threading.Lock()

    def _level(self, name: str, now: float) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(self.burst, now)  # type: ignore[arg-type]
        bucket.level = min(self.burst, bucket.level + (now - bucket.updated) * self.rate)  # type: ignore[operator]
        bucket.updated = now
        return bucket

    def wait(self, name: str) -> float:
        """Seconds until this caller may send again: 0.0 now, without taking anything."""
        if self.rate is None:
            return 0.0
        with self._lock:
            level = self._level(name, time.monotonic()).level
        return 0.0 if level > 0 else -level / self.rate + 1e-3

    def admit(self, name: str, estimate: int) -> float:
        """Let a request in and take its estimated tokens (0.0), or the seconds to wait."""
        if self.rate is None:
            return 0.0
        with self._lock:
            bucket = self._level(name, time.monotonic())
            if bucket.level > 0:
                bucket.level -= estimate
                return 0.0
            wait = -bucket.level / self.rate + 1e-3
        self.refused(name)
        return wait

    def refused(self, name: str) -> None:
        """Count a request refused by the rate limit."""
        with self._lock:
            self._usage.setdefault(name, Usage()).rate_limited += 1
        if self.on_limited is not None:
            self.on_limited(name)

    def settle(self, name: str, estimate: int, tokens: int) -> None:
        """A request served: count its tokens and correct the bucket by what the estimate missed."""
        with self._lock:
            if self.rate is not None:
                self._level(name, time.monotonic()).level += estimate - tokens
            usage = self._usage.setdefault(name, Usage())
            usage.tokens += tokens
            usage.requests += 1
        if self.on_served is not None:
            self.on_served(name, tokens)

    def give_back(self, name: str, estimate: int) -> None:
        """A request admitted but not served (queue full, an error): its estimate returns."""
        if self.rate is not None:
            with self._lock:
                self._level(name, time.monotonic()).level += estimate

    def usage(self, name: str | None = None) -> dict[str, dict[str, int]]:
        """Usage since the server started: of one name, or of every name (None)."""
        with self._lock:
            if name is not None:
                return {name: self._usage.get(name, Usage()).to_dict()}
            return {n: u.to_dict() for n, u in sorted(self._usage.items())}


def retry_after(seconds: float) -> str:
    """The Retry-After header's value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
