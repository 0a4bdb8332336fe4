"""The routes: `create_app(encoder, index=None, config=None)` returns the FastAPI app.

Every embedding route goes the same way: validate (schemas), count tokens on a tokenizer
thread, refuse what breaks a limit at once, queue the inputs (batcher; the encoder applies
prompts and dimensions), format the vectors (base64) and answer with the timings the guard
puts in the headers."""
from __future__ import annotations

import asyncio
import base64
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Hashable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentembed.server import schemas as s
from sentembed.server.batcher import Batcher, QueueFull
from sentembed.server.limits import APIError, Guard, ServerConfig, error_body
from sentembed.server.metrics import Metrics

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorResponse, "description": what}
    for code, what in {
        401: "missing or wrong API key", 413: "too many inputs or body too large",
        422: "malformed body, wrong types, or an input too long", 429: "queue full, retry later",
    }.items()
}


class Service:
    """What the routes share: the encoder, the optional index, the queue and the metrics."""

    def __init__(self, encoder: Any, index: Any | None, config: ServerConfig) -> None:
        self.enc, self.index, self.config = encoder, index, config
        self.metrics = Metrics()
        self.name = config.model_name or str(getattr(encoder, "name", "model"))
        # Tokenizing a long input takes milliseconds: never on the event loop.
        self.tokenizer_pool = ThreadPoolExecutor(2, thread_name_prefix="sentembed-tokenize")
        self.index_lock = threading.Lock()  # searches and changes of the index never overlap
        self._batcher: Batcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def batcher(self) -> Batcher:
        # Made in the loop that serves, on first use: also works where no lifespan runs.
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._loop is not loop:
            self._batcher = Batcher(
                self._encode, max_batch_tokens=self.config.max_batch_tokens,
                max_batch_items=self.config.max_batch_items, max_queue_items=self.config.max_queue_items,
                batching=self.config.batching, on_batch=self.metrics.observe_batch,
            )
            self._batcher.start()
            self._loop = loop
        return self._batcher

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
            self._batcher = None
        self.tokenizer_pool.shutdown(wait=False, cancel_futures=True)

    def _encode(self, texts: list[str], key: Hashable) -> np.ndarray:
        prompt_name, normalize, dimensions = key  # type: ignore[misc]
        return np.asarray(self.enc.encode(
            texts, batch_size=self.config.encode_batch_size, normalize=normalize,
            prompt_name=prompt_name, convert_to="numpy", show_progress=False, truncate_dim=dimensions,
        ), dtype=np.float32)

    async def embed(self, request: Request, texts: list[str], *, normalize: bool | None = None,
                    truncate: bool | None = None, prompt_name: str | None = None,
                    dimensions: int | None = None) -> tuple[np.ndarray, int]:
        """Vectors for texts through the queue, and the number of tokens they cost.

        `dimensions` keeps the first N (Matryoshka, through the encoder's `truncate_dim`)."""
        limit = self.config.max_client_batch_size
        if len(texts) > limit:
            self.metrics.rejected.labels("too_many_inputs").inc()
            raise APIError(413, f"{len(texts)} inputs in one request; at most {limit} are accepted", "payload_too_large")
        full = int(self.enc.dimension)
        if dimensions is not None and dimensions > full:
            raise APIError(422, f"dimensions {dimensions} is more than the model's {full}")
        dimensions = None if dimensions == full else dimensions
        if dimensions is not None and normalize is None and self.enc.normalizes:
            # A model that normalizes answers unit vectors at every size, as OpenAI's shortened
            # embeddings are; a cut alone would not be (sentence-transformers leaves it so).
            normalize = True
        timings = request.state.timings
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:  # the tokens of each text with the prompt the encoder will add
            counts = await loop.run_in_executor(
                self.tokenizer_pool, functools.partial(self.enc.count_tokens, texts, prompt_name=prompt_name))
        except ValueError as err:  # an unknown prompt_name
            raise APIError(422, str(err)) from None
        timings["tokenization"] = loop.time() - started
        max_len = int(self.enc.max_seq_length)
        if not (self.config.auto_truncate if truncate is None else truncate):
            for i, n in enumerate(counts):
                if n > max_len:
                    self.metrics.rejected.labels("input_too_long").inc()
                    raise APIError(422, f"input {i} has {n} tokens, more than the model's max_seq_length {max_len}; "
                                        "shorten it or send truncate=true")
        tokens = [min(int(n), max_len) for n in counts]
        try:
            job = await self.batcher.submit(texts, tokens, key=(prompt_name, normalize, dimensions))
        except QueueFull as err:
            self.metrics.rejected.labels("queue_full").inc()
            raise APIError(429, str(err), "queue_full") from None
        timings["queue"], timings["inference"] = job.queue_time, job.inference_time
        self.metrics.queue_time.observe(job.queue_time)
        if not texts:
            return np.zeros((0, dimensions or full), np.float32), 0
        return np.stack(job.results), sum(tokens)  # type: ignore[arg-type]

    def info(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "model": self.name, "dimension": int(self.enc.dimension),
            "max_seq_length": int(self.enc.max_seq_length), "normalizes": bool(self.enc.normalizes),
            "similarity_fn": str(self.enc.similarity_fn_name), "prompts": dict(getattr(self.enc, "prompts", {}) or {}),
            "limits": {"max_client_batch_size": c.max_client_batch_size, "max_body_bytes": c.max_body_bytes,
                       "max_batch_tokens": c.max_batch_tokens, "max_queue_items": c.max_queue_items,
                       "auto_truncate": c.auto_truncate, "batching": c.batching},
            "auth": c.api_key is not None,
        }
        if self.index is not None:
            with self.index_lock:
                out["index"] = self.index.info()
        return out


def _json(content: Any, status: int = 200) -> Response:
    # Returning a Response skips FastAPI's re-validation of the answer: vectors are big.
    return JSONResponse(content, status_code=status)


def _validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Never echo the input back (it may be megabytes) and never pass non-JSON values on.
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors[:20]]


def create_app(encoder: Any, index: Any | None = None, config: ServerConfig | None = None) -> FastAPI:
    """The service around one encoder (a `SentenceEncoder`) and, optionally, one `Index`."""
    config = config or ServerConfig()
    svc = Service(encoder, index, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.batcher  # start the worker before the first request arrives
        yield
        await svc.close()

    app = FastAPI(title="sentembed", version="0.1.0", lifespan=lifespan,
                  description="Sentence embeddings, similarity and search with dynamic batching.")
    app.state.service = svc

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> Response:
        return Response(error_body(err.status, err.message, err.kind, err.details), err.status,
                        media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> Response:
        details = _validation_details(list(err.errors()))
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        message = f"invalid request: {'.'.join(first['loc'])}: {first['msg']}"
        return Response(error_body(422, message, "invalid_request_error", details), 422, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "invalid_request_error")
        return Response(error_body(err.status_code, str(err.detail), kind), err.status_code,
                        media_type="application/json", headers=getattr(err, "headers", None))

    @app.post("/v1/embeddings", response_model=s.OpenAIEmbeddingResponse, responses=_ERRORS)
    async def openai_embeddings(body: s.OpenAIEmbeddingRequest, request: Request) -> Response:
        """OpenAI-compatible. Normalization follows the model: a dot-product model's vectors
        are returned as they are, not normalized."""
        texts = s.as_list(body.input)
        vectors, tokens = await svc.embed(request, texts, dimensions=body.dimensions)
        if body.encoding_format == "base64":
            items: list[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
        else:
            items = vectors.tolist()
        data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(items)]
        return _json({"object": "list", "data": data, "model": svc.name,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/embed", response_model=s.EmbedResponse, responses=_ERRORS)
    async def embed(body: s.EmbedRequest, request: Request) -> Response:
        """Embed inputs with the encoder's options; `normalize` null follows the model."""
        vectors, tokens = await svc.embed(request, s.as_list(body.inputs), normalize=body.normalize,
                                          truncate=body.truncate, prompt_name=body.prompt_name,
                                          dimensions=body.dimensions)
        return _json({"embeddings": vectors.tolist(), "model": svc.name, "dimension": int(vectors.shape[1]),
                      "tokens": tokens})

    @app.post("/similarity", response_model=s.SimilarityResponse, responses=_ERRORS)
    async def similarity(body: s.SimilarityRequest, request: Request) -> Response:
        """Scores of every source against every target, by the model's similarity function."""
        a, b = s.as_list(body.sources), s.as_list(body.targets)
        vectors, _ = await svc.embed(request, a + b, truncate=body.truncate)
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(svc.tokenizer_pool, encoder.similarity, vectors[: len(a)], vectors[len(a):])
        return _json({"scores": np.asarray(scores, dtype=np.float64).reshape(len(a), len(b)).tolist(),
                      "similarity_fn": str(encoder.similarity_fn_name)})

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Always open, even with an API key set: for load balancers."""
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> Response:
        loop = asyncio.get_running_loop()
        return _json(await loop.run_in_executor(None, svc.info))

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(svc.metrics.render(svc.batcher.depth), media_type=svc.metrics.content_type)

    if index is not None:
        from sentembed.server.index_routes import add_index_routes

        add_index_routes(app, svc, _ERRORS)

    routes = frozenset(getattr(r, "path", "") for r in app.routes)
    app.add_middleware(Guard, config=config, routes=routes, on_answer=svc.metrics.observe_request)
    return app
