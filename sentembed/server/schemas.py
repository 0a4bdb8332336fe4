"""Request and response bodies of the HTTP service (pydantic v2).

Inputs are validated here, before anything reaches the queue: a wrong type, a string that
cannot be encoded as UTF-8 (a lone surrogate such as "\\ud800" is valid JSON but not valid
text) or an empty `model` name is a 422 that names the offending item."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Texts = str | list[str]


def as_list(texts: Texts) -> list[str]:
    """A single string is a list of one."""
    return [texts] if isinstance(texts, str) else list(texts)


def _check_text(value: Texts) -> Texts:
    # Lone surrogates decode from JSON but cannot reach the Rust tokenizer; reject them here
    # so the error names the index instead of surfacing as a 500 from deep inside encode.
    for i, text in enumerate(as_list(value)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"item {i} is not valid Unicode text ({err.reason} at position {err.start})") from None
    return value


class _Strict(BaseModel):
    # strict: a number is not a string; forbid: a misspelt field is an error, not ignored.
    model_config = ConfigDict(strict=True, extra="forbid")


class OpenAIEmbeddingRequest(_Strict):
    """POST /v1/embeddings, as in OpenAI's API. Unknown fields are ignored there, so here too."""

    model_config = ConfigDict(strict=True, extra="ignore")
    input: Texts | list[int] | list[list[int]] = Field(description=(
        "A string or a list of strings to embed; or token ids (a list, or a list of lists) when "
        "input_tokenizer says whose they are."))
    model: str | None = Field(default=None, description="Informational; the served model answers.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="Keep the first N dimensions.")
    user: str | None = None
    input_tokenizer: str | None = Field(default=None, description=(
        "Whose token ids `input` holds: \"model\" (the served model's own, as POST /tokenize gives them, "
        "special tokens included) or a tiktoken encoding such as \"cl100k_base\" (decoded back to text where "
        "tiktoken's files are on the server). Token ids without it are refused: 422."))

    @field_validator("input")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        return _check_text(value) if isinstance(value, str) or (value and isinstance(value[0], str)) else value


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class EmbedRequest(_Strict):
    """POST /embed: the native route, with the encoder's options."""

    inputs: Texts
    normalize: bool | None = Field(default=None, description="None follows the model.")
    truncate: bool | None = Field(default=None, description="None uses the server's default.")
    prompt_name: str | None = None
    dimensions: int | None = Field(default=None, ge=1)

    _texts = field_validator("inputs")(_check_text)


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    model: str
    dimension: int
    tokens: int


class SimilarityRequest(_Strict):
    """POST /similarity: scores between every source and every target, by the model's function."""

    sources: Texts
    targets: Texts
    truncate: bool | None = None

    _texts = field_validator("sources", "targets")(_check_text)


class SimilarityResponse(BaseModel):
    scores: list[list[float]]
    similarity_fn: str


class SearchRequest(_Strict):
    """POST /search: one or more queries against the served index."""

    query: Texts
    top_k: int = Field(default=10, ge=1, le=1000)
    where: dict[str, Any] | None = None
    prompt_name: str | None = Field(default=None, description="None uses the model's 'query' prompt if it has one.")
    truncate: bool | None = None
    mode: Literal["dense", "lexical", "hybrid"] | None = Field(
        default=None, description="dense, lexical (BM25) or hybrid (both, fused); None: the index's default.")
    alpha: float | None = Field(default=None, ge=0.0, le=1.0, description=(
        "hybrid only: weigh min-max normalised scores, dense alpha : lexical 1 - alpha; None: reciprocal-rank fusion."))
    rerank: bool = Field(default=False, description=(
        "Reorder each query's best rerank_top_k documents by the server's cross-encoder (--reranker), scoring "
        "(query, matched passage); the hits then carry its scores."))
    rerank_top_k: int | None = Field(default=None, ge=1, le=1000, description=(
        "rerank: documents retrieved and reranked per query, at least top_k; None: max(top_k, 100). Queries x "
        "rerank_top_k pairs are bounded by max_client_batch_size, as /rerank's texts are."))
    rerank_label: str | int | None = Field(default=None, description=(
        "rerank: the label to rank by, for a cross-encoder with several."))
    rerank_alpha: float | None = Field(default=None, ge=0.0, le=1.0, description=(
        "rerank: order by the cross-encoder's min-max normalised scores x alpha + the search's x (1 - alpha); "
        "None: the cross-encoder's alone."))

    _texts = field_validator("query")(_check_text)


class SearchHit(BaseModel):
    id: str
    score: float
    text: str | None = None
    metadata: dict[str, Any] | None = None
    passage: str | None = Field(default=None, description="The part of text that matched: text[span[0]:span[1]].")
    span: tuple[int, int] | None = None


class SearchResponse(BaseModel):
    results: list[list[SearchHit]]


class IndexAddRequest(_Strict):
    texts: list[str]
    ids: list[str] | None = None
    metadata: list[dict[str, Any] | None] | None = None

    _texts = field_validator("texts")(_check_text)


class IndexAddResponse(BaseModel):
    ids: list[str]
    size: int


class IndexDeleteRequest(_Strict):
    ids: list[str]


class IndexDeleteResponse(BaseModel):
    deleted: int
    size: int


class TokenizeRequest(_Strict):
    """POST /tokenize, as in text-embeddings-inference: the tokens the model reads."""

    inputs: Texts
    add_special_tokens: bool = True

    _texts = field_validator("inputs")(_check_text)


class Token(BaseModel):
    id: int
    text: str = Field(description="The characters of the input it covers; a special token's own text.")
    special: bool
    start: int | None = Field(description="Character offset in the input; null for a special token.")
    stop: int | None


class ErrorBody(BaseModel):
    message: str
    type: str
    code: int
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class KeyUsage(BaseModel):
    tokens: int = Field(description="Input tokens served (as the answers' `usage` counts them).")
    requests: int = Field(description="Embedding requests served.")
    rate_limited: int = Field(description="Requests refused by the rate limit (429).")


class RateLimit(BaseModel):
    tokens_per_second: float
    burst: float


class UsageResponse(BaseModel):
    """GET /usage: by API key name (never the key); the caller's own, or all for the admin key."""

    keys: dict[str, KeyUsage]
    rate_limit: RateLimit | None = Field(description="Each key name's limit; null: none.")
