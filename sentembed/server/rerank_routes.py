"""POST /rerank: a query's texts scored by a cross-encoder, best first; registered when the
server is given a reranker (`sentembed serve MODEL --reranker DIR`).

Two peers' shapes, chosen by the field the request uses:

- `texts` (text-embeddings-inference): answers a list of {"index", "score"[, "text"]};
  `return_text` (or `return_documents`) adds the text, `raw_scores` gives logits.
- `documents` (Cohere, infinity): strings or {"text": ...}; answers {"id", "results":
  [{"index", "relevance_score"[, "document": {"text"}]}], "meta"}.

Both take `top_n`. Limits answer at once, naming the field: more texts than
max_client_batch_size is 413; an empty list, `top_n` <= 0 or a bad type is 422. Pairs are
truncated longest-first to the model's window, as sentence-transformers does. The reranker
runs on a worker thread, one call at a time under its `ServedReranker`'s lock, which /search's
`rerank` takes too (the encoder's queue is not shared).
"""
from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sentembed.server.limits import APIError, ServerConfig


@dataclass
class ServedReranker:
    """The served cross-encoder and its lock: every route that runs it (/rerank, /search with
    `rerank`) takes the lock, so one call runs at a time; its forward passes use every core."""

    model: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str


class RerankRequest(BaseModel):
    """`query` and `texts` (TEI) or `documents` (Cohere)."""

    model_config = ConfigDict(extra="forbid")
    query: str
    texts: list[str] | None = None
    documents: list[str | RerankDocument] | None = None
    top_n: int | None = Field(None, gt=0, description="Answer only the best top_n.")
    return_documents: bool | None = None
    return_text: bool | None = None
    raw_scores: bool = Field(False, description="Logits, without the model's activation.")
    label: str | int | None = Field(None, description="The label to rank by, for a model with several.")
    model: str | None = None
    truncate: bool | None = None            # accepted for TEI's clients; pairs are always truncated
    truncation_direction: str | None = None

    @field_validator("texts", "documents")
    @classmethod
    def _not_empty(cls, value: list | None) -> list | None:
        if value is not None and not value:
            raise ValueError("must hold at least one text")
        return value


def add_rerank_routes(app: FastAPI, served: ServedReranker, config: ServerConfig,
                      errors: dict[int | str, dict[str, Any]]) -> None:
    reranker = served.model

    @app.post("/rerank", responses=errors)
    async def rerank(body: RerankRequest) -> Response:
        """Score `texts` (or `documents`) against `query` with the cross-encoder, best first."""
        if (body.texts is None) == (body.documents is None):
            raise APIError(422, "give exactly one of `texts` (text-embeddings-inference) or `documents` (Cohere)")
        field = "texts" if body.texts is not None else "documents"
        texts = body.texts if body.texts is not None else \
            [d if isinstance(d, str) else d.text for d in body.documents or []]
        if len(texts) > config.max_client_batch_size:
            raise APIError(413, f"`{field}` holds {len(texts)} texts; at most {config.max_client_batch_size} a request "
                                "(max_client_batch_size)")
        show = bool(body.return_documents or body.return_text)

        def run() -> list[dict[str, Any]]:
            with served.lock:
                return reranker.rank(body.query, texts, top_k=body.top_n, return_documents=False, label=body.label,
                                     activation=not body.raw_scores, show_progress=False)

        try:
            ranked = await asyncio.get_running_loop().run_in_executor(None, run)
        except (ValueError, TypeError) as err:   # a label the model lacks, a model that needs one
            raise APIError(422, f"`label`: {err}" if "label" in str(err) else str(err)) from None
        if field == "texts":
            return JSONResponse([{"index": r["corpus_id"], "score": r["score"],
                                  **({"text": texts[r["corpus_id"]]} if show else {})} for r in ranked])
        results = [{"index": r["corpus_id"], "relevance_score": r["score"],
                    **({"document": {"text": texts[r["corpus_id"]]}} if show else {})} for r in ranked]
        return JSONResponse({"id": str(uuid.uuid4()), "results": results,
                             "meta": {"billed_units": {"search_units": 1}, "model": body.model or reranker.name}})
