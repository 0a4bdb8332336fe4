"""Service: what the routes share (the encoder, the optional index, the queue, the metrics,
the keys and the callers' quotas) and the one path every embedding takes: take the caller's
estimated tokens from its rate limit, tokenize once off the event loop (the encoder adds the
prompt), refuse what breaks a limit at once, queue the token ids (the batcher plans the
forward passes and the encoder runs each as given, applying Matryoshka truncation), and count
the tokens served to the caller."""
from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Hashable

import numpy as np
from fastapi import Request

from sentembed.backends.int8 import Int8Runner
from sentembed.backends.session import BackendRunner
from sentembed.model.batching import estimated_tokens
from sentembed.model.cpu import cpu
from sentembed.server.batcher import Batcher, QueueFull
from sentembed.server.keys import ANONYMOUS, Caller, KeyRing
from sentembed.server.limits import APIError, ServerConfig, rate_limited
from sentembed.server.metrics import Metrics
from sentembed.server.quota import Quota


def runs_in(encoder: Any) -> dict[str, Any]:
    """How the encoder's forward pass computes, for /info: its backend, dtype and quantization.

    int8 runs its products in int8 and everything between them in its activations' dtype, the
    dtype shown (it follows the CPU, whatever dtype was asked). ONNX Runtime and OpenVINO run a
    file, which says both: the file is shown instead.

    >>> runs_in(sentembed.load("all-mpnet-base-v2", quantize="int8"))
    {'backend': 'torch', 'dtype': 'bfloat16', 'quantization': 'int8'}
    """
    runner = getattr(getattr(getattr(encoder, "pipeline", None), "transformer", None), "mpnet", None)
    if isinstance(runner, Int8Runner):
        return {"backend": "torch", "dtype": str(runner.act_dtype).removeprefix("torch."), "quantization": "int8"}
    if isinstance(runner, BackendRunner):
        return {"backend": runner.backend, "file": runner.source}
    return {"backend": "torch", "dtype": str(getattr(encoder, "dtype", "float32")), "quantization": None}


def caller_of(request: Request) -> Caller:
    """Who sent this request, as the guard named it (anonymous where no guard runs)."""
    return getattr(request.state, "caller", None) or Caller(ANONYMOUS, admin=True)


class Service:
    """What the routes share: the encoder, the optional index, the queue and the metrics."""

    def __init__(self, encoder: Any, index: Any | None, config: ServerConfig) -> None:
        self.enc, self.index, self.config = encoder, index, config
        self.metrics = Metrics()
        self.keys = KeyRing(config.api_key, config.api_keys_file)
        self.quota = Quota(config.rate_limit, config.rate_burst, on_served=self.metrics.observe_served,
                           on_limited=self.metrics.observe_rate_limited)
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
                self._encode, plan=self._plan, max_batch_tokens=self.config.max_batch_tokens,
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

    def _plan(self, lengths: list[int]) -> list[list[int]]:
        # The encoder's forward passes for these inputs: at most encode_batch_size texts each.
        return self.enc.plan_batches(lengths, self.config.encode_batch_size)

    def _encode(self, ids: list[list[int]], key: Hashable) -> np.ndarray:
        # One planned forward pass; the ids already hold the prompt, whose length pooling needs.
        prompt_length, normalize, dimensions = key  # type: ignore[misc]
        return np.asarray(self.enc.encode_ids(ids, prompt_length, normalize=normalize, convert_to="numpy",
                                              truncate_dim=dimensions), dtype=np.float32)

    async def embed_ids(self, request: Request, ids: list[list[int]], *,
                        dimensions: int | None = None) -> tuple[np.ndarray, int]:
        """Vectors for the model's own token ids, the whole sequences it reads (checked by
        tokens.py), through the same queue as texts."""
        self._check_count(len(ids))
        dimensions, normalize = self._dimensions(dimensions, None)
        tokens = [len(row) for row in ids]
        return await self._charged(request, sum(tokens), lambda: self._queue(request, ids, tokens,
                                                                             (0, normalize, dimensions)))

    def _check_count(self, n: int) -> None:
        limit = self.config.max_client_batch_size
        if n > limit:
            self.metrics.rejected.labels("too_many_inputs").inc()
            raise APIError(413, f"{n} inputs in one request; at most {limit} are accepted", "payload_too_large")

    def check_chars(self, texts: list[str]) -> None:
        """413 for an input longer than max_input_chars, before a character of it is tokenized."""
        limit = self.config.max_input_chars
        for i, text in enumerate(texts):
            if len(text) > limit:
                self.metrics.rejected.labels("input_too_large").inc()
                raise APIError(413, f"input {i} has {len(text)} characters; at most {limit} are accepted "
                                    "(max_input_chars)", "payload_too_large")

    def _dimensions(self, dimensions: int | None, normalize: bool | None) -> tuple[int | None, bool | None]:
        full = int(self.enc.dimension)
        if dimensions is not None and dimensions > full:
            raise APIError(422, f"dimensions {dimensions} is more than the model's {full}")
        dimensions = None if dimensions == full else dimensions
        if dimensions is not None and normalize is None and self.enc.normalizes:
            # A model that normalizes answers unit vectors at every size, as OpenAI's shortened
            # embeddings are; a cut alone would not be (sentence-transformers leaves it so).
            normalize = True
        return dimensions, normalize

    async def embed(self, request: Request, texts: list[str], *, normalize: bool | None = None,
                    truncate: bool | None = None, prompt_name: str | None = None,
                    dimensions: int | None = None) -> tuple[np.ndarray, int]:
        """Vectors for texts through the queue, and the number of tokens they cost.

        `dimensions` keeps the first N (Matryoshka, through the encoder's `truncate_dim`)."""
        self._check_count(len(texts))
        self.check_chars(texts)
        dimensions, normalize = self._dimensions(dimensions, normalize)
        max_len = int(self.enc.max_seq_length)
        estimate = sum(estimated_tokens(t, max_len) for t in texts)
        return await self._charged(request, estimate, lambda: self._embed(request, texts, normalize, truncate,
                                                                          prompt_name, dimensions))

    async def _embed(self, request: Request, texts: list[str], normalize: bool | None, truncate: bool | None,
                     prompt_name: str | None, dimensions: int | None) -> tuple[np.ndarray, int]:
        timings = request.state.timings
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Each text tokenized once, with the prompt the encoder adds; its ids ride in the queue.
        # A huge text is cut to a prefix first (the encoder's one cut): the pool every request
        # shares never tokenizes megabytes for 384 tokens.
        tokenize = functools.partial(self.enc.tokenize_texts, texts, prompt_name=prompt_name, exact_counts=False)
        try:
            tokenized = await loop.run_in_executor(self.tokenizer_pool, tokenize)
        except ValueError as err:  # an unknown prompt_name
            raise APIError(422, str(err)) from None
        timings["tokenization"] = loop.time() - started
        max_len = int(self.enc.max_seq_length)
        if not (self.config.auto_truncate if truncate is None else truncate):
            for i, n in enumerate(tokenized.counts):
                if n > max_len:  # n counts the prefix a huge text is cut to: "or more"
                    self.metrics.rejected.labels("input_too_long").inc()
                    raise APIError(422, f"input {i} has {n} tokens or more, past the model's max_seq_length "
                                        f"{max_len}; shorten it or send truncate=true")
        tokens = [len(ids) for ids in tokenized.ids]  # cut to max_seq_length
        return await self._queue(request, tokenized.ids, tokens, (tokenized.prompt_length, normalize, dimensions))

    async def _charged(self, request: Request, estimate: int,
                       work: Callable[[], Awaitable[tuple[np.ndarray, int]]]) -> tuple[np.ndarray, int]:
        """work() under the caller's rate limit: 429 unless let in; once served, its tokens are
        counted to the caller; work that fails gives the estimate back."""
        name = caller_of(request).name
        wait = self.quota.admit(name, estimate)
        if wait:
            raise rate_limited(wait)
        try:
            vectors, tokens = await work()
        except BaseException:
            self.quota.give_back(name, estimate)
            raise
        self.quota.settle(name, estimate, tokens)
        return vectors, tokens

    async def _queue(self, request: Request, items: list, tokens: list[int], key: tuple) -> tuple[np.ndarray, int]:
        """Through the batcher: the vectors of items in order, and the tokens they cost."""
        timings = request.state.timings
        try:
            job = await self.batcher.submit(items, tokens, key=key)
        except QueueFull as err:
            self.metrics.rejected.labels("queue_full").inc()
            raise APIError(429, str(err), "queue_full") from None
        timings["queue"], timings["inference"] = job.queue_time, job.inference_time
        self.metrics.queue_time.observe(job.queue_time)
        if not items:
            return np.zeros((0, key[2] or int(self.enc.dimension)), np.float32), 0
        return np.stack(job.results), sum(tokens)  # type: ignore[arg-type]

    def info(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "model": self.name, "dimension": int(self.enc.dimension),
            "max_seq_length": int(self.enc.max_seq_length), "normalizes": bool(self.enc.normalizes),
            "similarity_fn": str(self.enc.similarity_fn_name), "prompts": dict(getattr(self.enc, "prompts", {}) or {}),
            "limits": {"max_client_batch_size": c.max_client_batch_size, "max_body_bytes": c.max_body_bytes,
                       "max_input_chars": c.max_input_chars,
                       "max_batch_tokens": c.max_batch_tokens, "max_queue_items": c.max_queue_items,
                       "auto_truncate": c.auto_truncate, "batching": c.batching,
                       "forward_batch_size": self.config.encode_batch_size},
            "auth": self.keys.enabled,
            "rate_limit": {"tokens_per_second": self.quota.rate, "burst": self.quota.burst} if self.quota.rate else None,
            **runs_in(self.enc), "cpu": cpu().to_dict(),
        }
        if self.index is not None:
            with self.index_lock:
                out["index"] = self.index.info()
        return out
