"""The routes: `create_app(encoder, index=None, config=None)` returns the FastAPI app.

Every embedding route goes the same way: validate (schemas), tokenize once on a tokenizer
thread (the encoder adds the prompt), refuse what breaks a limit at once, queue the token ids
(batcher; the encoder runs each planned batch and applies dimensions), format the vectors
(base64) and answer with the timings the guard puts in the headers."""
from __future__ import annotations

import asyncio
import base64
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentembed.server import schemas as s
from sentembed.server.limits import APIError, Guard, ServerConfig, error_body
from sentembed.server.service import Service, caller_of
from sentembed.server.tokens import openai_vectors, token_details

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorResponse, "description": what}
    for code, what in {
        401: "missing or wrong API key", 413: "too many inputs or body too large",
        422: "malformed body, wrong types, or an input too long",
        429: "queue full, or this API key's rate limit reached: retry after the Retry-After header's seconds",
    }.items()
}


def _json(content: Any, status: int = 200) -> Response:
    # Returning a Response skips FastAPI's re-validation of the answer: vectors are big.
    return JSONResponse(content, status_code=status)


def _validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Never echo the input back (it may be megabytes) and never pass non-JSON values on.
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors[:20]]


def create_app(encoder: Any, index: Any | None = None, config: ServerConfig | None = None,
               reranker: Any | None = None) -> FastAPI:
    """The service around one encoder (a `SentenceEncoder`) and, optionally, one `Index` and
    one reranker (a `CrossEncoder`, for POST /rerank and /search's `rerank`)."""
    config = config or ServerConfig()
    svc = Service(encoder, index, config)

    ready = asyncio.Event()  # /ready: set once the batcher runs, cleared when shutdown begins

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.batcher  # start the worker before the first request arrives
        ready.set()
        yield
        ready.clear()
        await svc.close()

    app = FastAPI(title="sentembed", version="0.1.0", lifespan=lifespan,
                  description="Sentence embeddings, similarity and search with dynamic batching.")
    app.state.service = svc

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> Response:
        return Response(error_body(err.status, err.message, err.kind, err.details), err.status,
                        media_type="application/json", headers=err.headers)

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
        vectors, tokens = await openai_vectors(svc, request, body)  # texts, or token ids whose owner is named
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

    @app.post("/tokenize", response_model=list[list[s.Token]], responses=_ERRORS)
    async def tokenize(body: s.TokenizeRequest) -> Response:
        """The tokens the model reads, per input (text-embeddings-inference's shape); their ids,
        special tokens included, are what `input_tokenizer: "model"` takes back."""
        texts = s.as_list(body.inputs)
        svc.check_chars(texts)  # shown whole, so tokenized whole: bounded here
        loop = asyncio.get_running_loop()
        return _json(await loop.run_in_executor(svc.tokenizer_pool, token_details, encoder.tokenizer,
                                                texts, body.add_special_tokens))

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers. Always open, even with an API key set: for load balancers."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": s.ErrorResponse, "description": "starting or shutting down"}})
    async def readiness() -> Response:
        """Readiness: 200 once the model is loaded and the batcher runs, 503 before and while
        shutting down. Open like /health."""
        if ready.is_set():
            return _json({"status": "ready"})
        return Response(error_body(503, "not ready: starting or shutting down", "not_ready"), 503,
                        media_type="application/json")

    @app.get("/info")
    async def info() -> Response:
        loop = asyncio.get_running_loop()
        return _json(await loop.run_in_executor(None, svc.info))

    @app.get("/usage", response_model=s.UsageResponse, responses={401: _ERRORS[401]})
    async def usage(request: Request) -> Response:
        """Tokens served, requests served and requests refused by the rate limit since the
        server started, by API key name: the caller's own; every caller's for the admin key
        (--api-key) or on a server without keys. Never counts against the rate limit."""
        caller = caller_of(request)
        quota = svc.quota
        limit = {"tokens_per_second": quota.rate, "burst": quota.burst} if quota.rate else None
        return _json({"keys": quota.usage(None if caller.admin else caller.name), "rate_limit": limit})

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(svc.metrics.render(svc.batcher.depth), media_type=svc.metrics.content_type)

    served = None  # one reranker and its lock, for every route that runs it
    if reranker is not None:
        from sentembed.server.rerank_routes import ServedReranker, add_rerank_routes

        served = ServedReranker(reranker)
        add_rerank_routes(app, served, config, _ERRORS)

    if index is not None:
        from sentembed.server.index_routes import add_index_routes

        add_index_routes(app, svc, _ERRORS, served)

    from sentembed.server.page import add_page_routes

    add_page_routes(app)  # the playground at /: open without the key, as it holds no secret

    routes = frozenset(getattr(r, "path", "") for r in app.routes)
    app.add_middleware(Guard, config=config, routes=routes, on_answer=svc.metrics.observe_request, keys=svc.keys,
                       quota=svc.quota)
    if config.cors_origins:  # outside the guard: a browser's preflight carries no API key
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key"],
                           expose_headers=[f"x-{n}-time" for n in ("tokenization", "queue", "inference", "total")])
    return app
