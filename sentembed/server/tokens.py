"""Tokens at the edge of the API: what `POST /tokenize` shows, and what an `input` of token ids
means on the OpenAI route.

OpenAI's embeddings API takes token ids as well as text, and LangChain's `OpenAIEmbeddings`
sends ids by default: ids of OpenAI's tiktoken vocabulary, not of the served model. Read as
the model's own they would embed other tokens and answer confident garbage (TEI #273,
infinity #295). So ids are taken only when the request says whose they are, in
`input_tokenizer`:

- "model": the served model's own ids, the whole sequence it reads, as `/tokenize` gives
  them (special tokens included); embedded as they are.
- a tiktoken encoding name ("cl100k_base", what LangChain uses): decoded back to text and
  embedded as text, where tiktoken and that encoding's files are on this machine.
- nothing: 422, naming the client setting that sends text instead.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

from sentembed.server.limits import APIError

MODEL = "model"

REFUSAL = (
    "input holds token ids, but not whose: LangChain's OpenAIEmbeddings sends ids of OpenAI's tiktoken "
    "vocabulary by default, which this model does not read. Send text instead "
    "(LangChain: OpenAIEmbeddings(..., check_embedding_ctx_length=False)), or say whose ids they are with "
    "input_tokenizer: \"model\" for this model's own ids (as POST /tokenize gives them), or a tiktoken "
    "encoding such as \"cl100k_base\""
)


def holds_ids(value: Any) -> bool:
    """Whether an OpenAI `input` is token ids (a list of ints, or a list of such lists)."""
    return isinstance(value, list) and bool(value) and not isinstance(value[0], str)


def id_rows(value: list) -> list[list[int]]:
    """One list of ids per input: a flat list is one input."""
    return [list(row) for row in value] if isinstance(value[0], list) else [list(value)]


def check_model_ids(rows: list[list[int]], vocab_size: int, max_seq_length: int) -> None:
    """The model's own ids: inside its vocabulary, 1 to max_seq_length of them (they are
    embedded as given, so nothing would cut them where the model's tokenizer cuts)."""
    for i, row in enumerate(rows):
        if not 0 < len(row) <= max_seq_length:
            raise APIError(422, f"input {i} has {len(row)} token ids; 1 to the model's max_seq_length "
                                f"{max_seq_length} are accepted")
        bad = next((t for t in row if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise APIError(422, f"input {i} holds token id {bad}, outside the model's vocabulary of {vocab_size}")


_encodings: dict[str, Any] = {}  # name -> tiktoken Encoding, or the reason it cannot load
_encodings_lock = threading.Lock()


def _tiktoken_encoding(name: str) -> Any:
    try:
        import tiktoken
    except ImportError:
        raise APIError(422, f"input_tokenizer {name!r} needs tiktoken, which this server does not have; "
                            "send text instead (LangChain: check_embedding_ctx_length=False)") from None
    if name not in tiktoken.list_encoding_names():
        raise APIError(422, f"unknown input_tokenizer {name!r}; accepted: {MODEL!r} or a tiktoken encoding: "
                            f"{', '.join(tiktoken.list_encoding_names())}")
    with _encodings_lock:
        if name not in _encodings:
            try:  # tiktoken reads its cache, else downloads: tried once per process, not per request
                _encodings[name] = tiktoken.get_encoding(name)
            except Exception as err:  # noqa: BLE001 - a download error of any kind
                _encodings[name] = f"{type(err).__name__}: {str(err)[:200]}"
        found = _encodings[name]
    if isinstance(found, str):
        raise APIError(422, f"tiktoken's {name} files are not available on this server ({found}); send text "
                            "instead (LangChain: check_embedding_ctx_length=False)")
    return found


def decode_tiktoken(rows: list[list[int]], name: str) -> list[str]:
    """Texts back from ids of a tiktoken encoding (runs on a worker thread: it may read files)."""
    encoding = _tiktoken_encoding(name)
    texts = []
    for i, row in enumerate(rows):
        try:
            texts.append(encoding.decode(row))
        except (KeyError, ValueError, OverflowError):
            raise APIError(422, f"input {i} holds token ids that tiktoken's {name} does not have") from None
    return texts


def token_details(tokenizer: Any, texts: list[str], add_special_tokens: bool = True) -> list[list[dict[str, Any]]]:
    """TEI's /tokenize answer: per text, per token {id, text, special, start, stop}; start and
    stop are character offsets into the text (None for special tokens), text the characters
    they cover, or the token itself for a special token. Untruncated, as count_tokens counts."""
    out = []
    for text, encoding in zip(texts, tokenizer.encodings(texts, add_special_tokens=add_special_tokens)):
        # A lowercasing tokenizer reads text.lower(): its offsets fit the text itself unless
        # lowercasing changed the length ("İ" becomes two characters).
        lowered = text.lower() if tokenizer.do_lower_case else text
        source = text if len(lowered) == len(text) else lowered
        tokens = []
        for token_id, token, special, (start, stop) in zip(encoding.ids, encoding.tokens,
                                                           encoding.special_tokens_mask, encoding.offsets):
            if special:
                tokens.append({"id": token_id, "text": token, "special": True, "start": None, "stop": None})
            else:
                tokens.append({"id": token_id, "text": source[start:stop], "special": False,
                               "start": start, "stop": stop})
        out.append(tokens)
    return out


async def openai_vectors(svc: Any, request: Any, body: Any) -> tuple[Any, int]:
    """The vectors of an OpenAI request's `input` (texts, or token ids whose owner is named)
    and the tokens they cost, through the service's one embedding path."""
    if not holds_ids(body.input):
        return await svc.embed(request, [body.input] if isinstance(body.input, str) else list(body.input),
                               dimensions=body.dimensions)
    rows = id_rows(body.input)
    if body.input_tokenizer is None:
        raise APIError(422, REFUSAL)
    if body.input_tokenizer == MODEL:
        check_model_ids(rows, svc.enc.tokenizer.fast.get_vocab_size(), int(svc.enc.max_seq_length))
        return await svc.embed_ids(request, rows, dimensions=body.dimensions)
    loop = asyncio.get_running_loop()
    texts = await loop.run_in_executor(svc.tokenizer_pool, decode_tiktoken, rows, body.input_tokenizer)
    return await svc.embed(request, texts, dimensions=body.dimensions)
