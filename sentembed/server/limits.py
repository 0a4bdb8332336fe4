"""The server's limits and the guard in front of every route.

`ServerConfig` holds the limits. `Guard` is a plain ASGI middleware (no BaseHTTPMiddleware:
it buffers nothing it need not and does not break streaming) that, before any route runs,
refuses a wrong or missing API key (401), a body over the size limit (413) and a POST from a
caller past its rate limit (429 with Retry-After, before its body is parsed), names the
caller for the routes (`request.state.caller`), and after it, stamps the timing headers on
every answer, errors included, and counts the request."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from sentembed.server.keys import ANONYMOUS, Caller, KeyRing
from sentembed.server.quota import Quota, retry_after

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("sentembed.server")


@dataclass
class ServerConfig:
    """What the server accepts and how it batches. The defaults suit a 2-core CPU box."""

    api_key: str | None = None  # the operator's key, named "admin" (keys.py); "" is refused
    api_keys_file: str | None = None  # client keys, one a line: KEY [NAME] (keys.py), reread on change
    # Tokens a second each caller name may spend (429 with Retry-After beyond), and how many at
    # once (default: one second's worth). None: no limit; usage is counted either way.
    rate_limit: float | None = None
    rate_burst: float | None = None
    max_client_batch_size: int = 512  # inputs per request (413 beyond)
    max_body_bytes: int = 4 * 1024 * 1024  # request body (413 beyond)
    # Characters of one input (413 beyond). Embedded inputs are cut to a few thousand
    # characters before tokenizing; this bounds what is still read whole: /tokenize, and a
    # text whose prefix holds few tokens (whitespace), for which the cut grows.
    max_input_chars: int = 1_000_000
    # Input tokens the batcher takes from the queue at once. Larger takes pad less (the planner
    # sorts each by length before cutting forward passes): on the 2-core box 16384 reached 99%
    # of offline encode per CPU-second, 2048 only 85%, though smaller ones answer sooner (a
    # request waits for its whole take).
    max_batch_tokens: int = 16384
    max_batch_items: int = 512  # inputs the batcher takes at once
    max_queue_items: int = 8192  # inputs waiting (429 beyond)
    # /search: hits per request, queries x top_k (413 at once beyond), and bytes of the answer
    # (413 once the hits found would pass it; each hit carries its document's whole text).
    max_search_hits: int = 10_000
    max_search_response_bytes: int = 64 * 1024 * 1024
    auto_truncate: bool = False  # what `truncate` means when a request does not say
    batching: bool = True  # False: every request runs alone (the benchmark's baseline)
    # Texts a forward pass, as the encoder's plan_batches cuts one take: encode's default (on
    # CPU the encoder's token budget keeps a pass of short texts small whatever this is).
    encode_batch_size: int = 32
    model_name: str | None = None  # what /info and the OpenAI route call the model
    # Web origins whose pages may call the API from a browser (CORS), e.g. "https://app.example";
    # "*" for any. None by default: only same-origin pages (the playground) and non-browser clients.
    cors_origins: tuple[str, ...] = ()


class APIError(Exception):
    """An answer with a status and a JSON error body; raised anywhere in a route."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 details: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.details = status, message, kind, details
        self.headers = headers


def rate_limited(seconds: float) -> APIError:
    """The 429 of a caller past its rate limit, saying when to come back."""
    wait = retry_after(seconds)
    return APIError(429, f"rate limit reached for this API key; retry after {wait} s", "rate_limited",
                    headers={"retry-after": wait})


def error_body(status: int, message: str, kind: str, details: list[dict[str, Any]] | None = None) -> bytes:
    """The one error shape of the service, close to OpenAI's: {"error": {message, type, code}}."""
    error: dict[str, Any] = {"message": message, "type": kind, "code": status}
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


# Routes that answer without a key: /health and /ready, so load balancers can probe; the
# playground's page and files (page.PAGE_FILES), which hold no secret: its API calls carry the key.
OPEN_PATHS = frozenset({"/health", "/ready", "/", "/static/app.js", "/static/style.css"})


class Guard:
    """API key, body size, rate limit, timing headers and request metrics, around the whole app.

    on_answer(route, status, seconds) is called once per request."""

    def __init__(self, app: ASGIApp, config: ServerConfig, routes: frozenset[str],
                 on_answer: Callable[[str, int, float], None] | None = None,
                 keys: KeyRing | None = None, quota: Quota | None = None) -> None:
        self.app, self.config, self.routes, self.on_answer = app, config, routes, on_answer
        self.keys = keys if keys is not None else KeyRing(config.api_key, config.api_keys_file)
        self.quota = quota

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        # Routes add their own timings here (request.state.timings); the headers go out with
        # the first byte of the answer, whatever the answer is.
        timings: dict[str, float] = {}
        scope.setdefault("state", {})["timings"] = timings
        status_box = [500, False]  # status, started

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0], status_box[1] = message["status"], True
                headers = list(message.get("headers", []))
                total = (time.perf_counter() - start) * 1000
                for name in ("tokenization", "queue", "inference"):
                    headers.append((f"x-{name}-time".encode(), f"{timings.get(name, 0.0) * 1000:.3f}".encode()))
                headers.append((b"x-total-time", f"{total:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        path = scope.get("path", "")
        route = path if path in self.routes else "other"
        try:
            caller, refusal = self._identify(scope)
            if refusal is not None:
                await self._answer(send_timed, *refusal)
                return
            scope["state"]["caller"] = caller
            receive, refusal = await self._limit_body(scope, receive)
            if refusal is not None:
                await self._answer(send_timed, *refusal)
                return
            wait = self._rate_wait(scope, caller)
            if wait:  # the body was read, not parsed: refusing a flood costs next to nothing
                err = rate_limited(wait)
                await self._answer(send_timed, err.status, err.message, err.kind, err.headers)
                return
            await self.app(scope, receive, send_timed)
        except Exception:  # never let an error escape as a bare 500 page without headers
            log.exception("error answering %s %s", scope.get("method"), path)
            if not status_box[1]:
                await self._answer(send_timed, 500, "internal error; see the server log", "internal_error")
        finally:
            if self.on_answer is not None:
                self.on_answer(route, status_box[0], time.perf_counter() - start)

    def _identify(self, scope: Scope) -> tuple[Caller, tuple[int, str, str] | None]:
        if scope.get("path") in OPEN_PATHS:
            return Caller(ANONYMOUS), None
        given = None
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
            elif name == b"x-api-key":
                given = value.strip()
        caller = self.keys.identify(given)  # by the key's hash: no key guessing by timing
        if caller is not None:
            return caller, None
        if given is None:
            return Caller(ANONYMOUS), (401, "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                                       "unauthorized")
        return Caller(ANONYMOUS), (401, "wrong API key", "unauthorized")

    def _rate_wait(self, scope: Scope, caller: Caller) -> float:
        # Every POST is work; a caller in debt waits before sending more (GETs, /usage among
        # them, stay open). The tokens themselves are taken where they are counted (service.py).
        if self.quota is None or scope.get("method") != "POST" or scope.get("path") in OPEN_PATHS:
            return 0.0
        wait = self.quota.wait(caller.name)
        if wait:
            self.quota.refused(caller.name)
        return wait

    async def _limit_body(self, scope: Scope, receive: Receive) -> tuple[Receive, tuple[int, str, str] | None]:
        """Read the body up to the limit; 413 at once past it (before parsing a byte of JSON)."""
        limit = self.config.max_body_bytes
        too_big = (413, f"request body larger than {limit} bytes; send fewer or shorter inputs", "payload_too_large")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return receive, too_big
                except ValueError:
                    return receive, (400, "invalid Content-Length header", "invalid_request_error")
        if scope.get("method") in ("GET", "HEAD"):
            return receive, None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                chunks = []
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:  # a chunked body that lied by omission
                return receive, too_big
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, None

    @staticmethod
    async def _answer(send: Send, status: int, message: str, kind: str, extra: dict[str, str] | None = None) -> None:
        body = error_body(status, message, kind)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
