"""/search, /index/add, /index/delete and /index/compact: registered only when an index is served.

Queries and added texts go through the same queue as every other input (with the model's
query or document prompt, as `Index` would use), so the model only ever runs on the model
thread; the index is then searched or written with those vectors on a worker thread. A search
with `rerank` hands its hits to the served cross-encoder next, on the same worker thread, under
the reranker's lock and no longer the index's (rerank_routes.py's `ServedReranker`)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sentembed.search.documents import check_documents
from sentembed.search.integrity import IndexDamaged
from sentembed.search.lexical import match_expression
from sentembed.search.rerank import rerank_depth, rerank_hits
from sentembed.server import schemas as s
from sentembed.server.limits import APIError
from sentembed.server.rerank_routes import ServedReranker
from sentembed.server.service import Service

# What an index raises for a bad filter, a duplicate or unknown id: the caller's mistake.
_CALLER_ERRORS = (ValueError, KeyError, TypeError)


def _hit(hit: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(hit):
        d = dataclasses.asdict(hit)
    elif isinstance(hit, dict):
        d = dict(hit)
    else:
        d = {k: getattr(hit, k, None) for k in ("id", "score", "text", "metadata", "passage", "span")}
    span = d.get("span")
    return {"id": str(d.get("id")), "score": float(d.get("score", 0.0)), "text": d.get("text"),
            "metadata": d.get("metadata"), "passage": d.get("passage"), "span": list(span) if span else None}


def _answer(found: list[list[Any]], limit: int) -> bytes:
    """The JSON body {"results": [[hit, ...], ...]}, refused (413) as soon as it would pass
    `limit` bytes: it is never built whole first."""
    parts, size = [], 0
    for hits in found:
        encoded = [json.dumps(_hit(h), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
                   for h in hits]
        size += sum(len(e) + 1 for e in encoded) + 2
        if size > limit:
            raise APIError(413, f"the answer would pass {limit} bytes (max_search_response_bytes): ask for fewer "
                           "hits (top_k, queries) or filter with where", "payload_too_large")
        parts.append(b"[" + b",".join(encoded) + b"]")
    return b'{"results":[' + b",".join(parts) + b"]}"


def _depth(body: s.SearchRequest, queries: list[str], reranker: ServedReranker | None, max_pairs: int) -> int:
    """Documents to retrieve per query: top_k, or with `rerank` the reranker's depth; a request
    the reranker cannot serve is refused at once, naming the field."""
    if body.rerank and reranker is None:
        raise APIError(422, "`rerank`: this server has no reranker (start it with --reranker DIR)")
    try:
        depth = rerank_depth(reranker.model if body.rerank else None, queries, body.top_k, body.rerank_top_k,
                             body.rerank_label, body.rerank_alpha)
    except ValueError as err:  # rerank_top_k below top_k, a label the model lacks, ...
        raise APIError(422, str(err)) from None
    if body.rerank and len(queries) * depth > max_pairs:
        raise APIError(413, f"`rerank_top_k`: {len(queries)} queries x {depth} documents = {len(queries) * depth} pairs "
                       f"for the reranker; at most {max_pairs} a request (max_client_batch_size)", "payload_too_large")
    return depth


def add_index_routes(app: FastAPI, svc: Service, errors: dict[int | str, dict[str, Any]],
                     reranker: ServedReranker | None = None) -> None:
    index = svc.index

    @app.post("/search", response_model=s.SearchResponse, responses=errors)
    async def search(body: s.SearchRequest, request: Request) -> Response:
        """Top-k documents of each query, each hit with the passage that matched; `mode` dense,
        lexical or hybrid (None: the index's default); the model's 'query' prompt is used when
        it has one. `rerank`: the server's cross-encoder reorders the best `rerank_top_k`."""
        prompt_name = body.prompt_name if body.prompt_name is not None else svc.enc.prompt_name_for("query")
        queries = s.as_list(body.query)
        hits, limit = len(queries) * body.top_k, svc.config.max_search_hits
        if hits > limit:  # at once, before any work
            raise APIError(413, f"{len(queries)} queries x top_k {body.top_k} = {hits} hits; at most {limit} "
                           "(max_search_hits) are answered per request", "payload_too_large")
        depth = _depth(body, queries, reranker, svc.config.max_client_batch_size)
        vectors = None
        # Lexical search needs no vectors, but a query without a word falls back to dense.
        if body.mode != "lexical" or any(match_expression(q) is None for q in queries):
            vectors, _ = await svc.embed(request, queries, truncate=body.truncate, prompt_name=prompt_name)

        def run() -> bytes:
            with svc.index_lock:
                found = index.search_many(queries, top_k=depth, where=body.where, mode=body.mode,
                                          alpha=body.alpha, query_vectors=vectors)
            if body.rerank and reranker is not None:  # the index is free again: writers need not wait for it
                with reranker.lock:
                    found = rerank_hits(reranker.model, queries, found, body.top_k, body.rerank_label,
                                        show_progress=False, alpha=body.rerank_alpha)
            return _answer(found, svc.config.max_search_response_bytes)

        try:
            answer = await asyncio.get_running_loop().run_in_executor(None, run)
        except _CALLER_ERRORS as err:
            raise APIError(422, f"search failed: {err}") from None
        except IndexDamaged as err:  # refused, never answered from a damaged file
            raise APIError(500, str(err), "index_damaged") from None
        return Response(answer, media_type="application/json")

    @app.post("/index/add", response_model=s.IndexAddResponse, responses=errors)
    async def index_add(body: s.IndexAddRequest, request: Request) -> Response:
        """Add texts (with optional ids and metadata, one per text); answers the ids."""
        n = len(body.texts)
        if n > svc.config.max_client_batch_size:
            raise APIError(413, f"{n} texts in one request; at most {svc.config.max_client_batch_size} are accepted",
                           "payload_too_large")
        for name, given in (("ids", body.ids), ("metadata", body.metadata)):
            if given is not None and len(given) != n:
                raise APIError(422, f"{name} has {len(given)} items but texts has {n}; give one per text")
        try:  # at the door, before any text is embedded: ids, metadata (JSON, nesting depth)
            check_documents(body.texts, body.ids, body.metadata)
        except _CALLER_ERRORS as err:
            raise APIError(422, f"could not add: {err}") from None

        prompt_name = svc.enc.prompt_name_for("document")
        loop = asyncio.get_running_loop()
        try:  # long texts are cut into passages first, and each passage is embedded
            spans = await loop.run_in_executor(None, index.chunk, body.texts)
        except _CALLER_ERRORS as err:
            raise APIError(422, f"could not add: {err}") from None
        passages = [t[a:b] for t, doc in zip(body.texts, spans) for a, b in doc]
        step = svc.config.max_client_batch_size
        parts = [(await svc.embed(request, passages[i : i + step], truncate=True, prompt_name=prompt_name))[0]
                 for i in range(0, len(passages), step)]
        vectors = np.concatenate(parts) if parts else np.zeros((0, int(svc.enc.dimension)), dtype=np.float32)

        def run() -> tuple[list[str], int]:
            with svc.index_lock:
                ids = index.add(body.texts, ids=body.ids, metadata=body.metadata, vectors=vectors)
                return [str(i) for i in ids], len(index)

        try:
            ids, size = await asyncio.get_running_loop().run_in_executor(None, run)
        except _CALLER_ERRORS as err:
            raise APIError(422, f"could not add: {err}") from None
        except IndexDamaged as err:
            raise APIError(500, str(err), "index_damaged") from None
        return JSONResponse({"ids": ids, "size": size})

    @app.post("/index/compact", responses=errors)
    async def index_compact() -> Response:
        """Rewrite the vectors without deleted rows (adds merge small segments on their own);
        answers the segments replaced and the index's counts after."""

        def run() -> dict[str, int]:
            with svc.index_lock:
                replaced = index.compact()
                info = index.info()
                return {"compacted": int(replaced), "size": int(info["count"]), "segments": int(info["segments"])}

        try:
            return JSONResponse(await asyncio.get_running_loop().run_in_executor(None, run))
        except IndexDamaged as err:  # compaction reads every segment: a damaged one is named, not copied
            raise APIError(500, str(err), "index_damaged") from None

    @app.post("/index/delete", response_model=s.IndexDeleteResponse, responses=errors)
    async def index_delete(body: s.IndexDeleteRequest) -> Response:
        """Delete by id; an id not in the index is a 422 and nothing is deleted."""

        def run() -> tuple[int, int]:
            with svc.index_lock:
                deleted = index.delete(body.ids)
                return int(deleted), len(index)

        try:
            deleted, size = await asyncio.get_running_loop().run_in_executor(None, run)
        except _CALLER_ERRORS as err:
            raise APIError(422, f"could not delete: {err}") from None
        return JSONResponse({"deleted": deleted, "size": size})
