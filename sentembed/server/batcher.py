"""Dynamic batching: every input of every request joins one queue, tokenized once (its token
ids and their count ride in the queue entry); one worker takes from its head as many inputs as
fit `max_batch_tokens`, plans their forward passes with the batch planner
(model/batching.py, through `plan`), runs the model on its own thread and routes each vector
back to the request that asked for it. The model runs each planned batch as it is given.

Nothing waits on purpose: while the model runs one batch the next one piles up in the queue,
so under load batches grow by themselves and an idle server answers a lone request at once
(the scheme of text-embeddings-inference). Requests whose client went away are dropped from
the queue instead of being computed for nobody.
"""
from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np

from sentembed.model.batching import Budget


class QueueFull(Exception):
    """The queue cannot take the inputs of this request now (answered 429)."""


@dataclass
class Job:
    """The inputs of one request (token ids, or whatever `encode` takes) and where their vectors go."""

    inputs: list[Any]
    tokens: list[int]
    key: Hashable  # inputs with different keys (prompt, normalize) never share an encode call
    enqueued: float = field(default_factory=time.perf_counter)
    results: list[np.ndarray | None] = field(default_factory=list)
    remaining: int = 0
    future: asyncio.Future | None = None
    cancelled: bool = False
    queue_time: float = 0.0  # seconds from enqueue until its last input started on the model
    inference_time: float = 0.0  # seconds of model time of the batches it was part of


@dataclass
class _Item:
    job: Job
    position: int


@dataclass
class BatchStats:
    """What one batch was, for metrics."""

    size: int
    tokens: int
    seconds: float


EncodeFn = Callable[[list[Any], Hashable], np.ndarray]
PlanFn = Callable[[list[int]], list[list[int]]]


class Batcher:
    """The queue and its worker. Create it inside a running event loop, then `start()`.

    encode(inputs, key) -> (n, dim) array runs one forward pass on the model thread;
    plan(token counts) -> lists of indices cuts the inputs of one key into those passes (the
    encoder's `plan_batches`; without it they run as one). `max_batch_tokens` bounds the sum
    of input tokens taken from the queue at once, `max_queue_items` the inputs waiting.
    With `batching=False` every request is run alone (a baseline for benchmarks)."""

    def __init__(
        self,
        encode: EncodeFn,
        *,
        plan: PlanFn | None = None,
        max_batch_tokens: int = 16384,
        max_batch_items: int = 512,
        max_queue_items: int = 8192,
        batching: bool = True,
        on_batch: Callable[[BatchStats], None] | None = None,
        model_executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self._encode = encode
        self._plan = plan
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_items = max_batch_items
        self.max_queue_items = max_queue_items
        self.batching = batching
        self._on_batch = on_batch
        # One model thread: torch already uses every core for one forward pass, and running
        # everything that touches the model here keeps it single-threaded (index.add too).
        self.model_executor = model_executor or ThreadPoolExecutor(1, thread_name_prefix="sentembed-model")
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False

    @property
    def depth(self) -> int:
        """Inputs waiting in the queue (not counting the batch on the model)."""
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sentembed-batcher")

    async def close(self) -> None:
        """Stop the worker; waiting requests fail with RuntimeError."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._queue:
            job = self._queue.popleft().job
            if job.future is not None and not job.future.done():
                job.future.set_exception(RuntimeError("server is shutting down"))
        self.model_executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, inputs: list[Any], tokens: list[int], key: Hashable = None) -> Job:
        """Queue these inputs (tokens: the count of each) and wait for their vectors
        (job.results, in input order)."""
        if self._closed:
            raise RuntimeError("server is shutting down")
        if len(self._queue) + len(inputs) > self.max_queue_items:
            raise QueueFull(
                f"the queue holds {len(self._queue)} inputs and takes at most {self.max_queue_items}; retry later"
            )
        job = Job(inputs=inputs, tokens=tokens, key=key, results=[None] * len(inputs), remaining=len(inputs))
        if not inputs:
            return job
        job.future = asyncio.get_running_loop().create_future()
        self._queue.extend(_Item(job, i) for i in range(len(inputs)))
        self._wake.set()
        try:
            await job.future
        except asyncio.CancelledError:
            job.cancelled = True  # the worker skips what is still queued
            raise
        return job

    def _take_batch(self) -> list[_Item]:
        """The head of the queue, in order, up to the token budget; always at least one input."""
        batch: list[_Item] = []
        budget = Budget(self.max_batch_tokens, self.max_batch_items, packed=True)  # input tokens, summed
        while self._queue:
            item = self._queue[0]
            if item.job.cancelled:
                self._queue.popleft()
                continue
            cost = item.job.tokens[item.position]
            if batch and not self.batching and item.job is not batch[0].job:
                break
            if not budget.admits(cost):
                break
            batch.append(self._queue.popleft())
            budget.add(cost)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = self._take_batch()
            if not batch:
                continue
            start = time.perf_counter()
            for item in batch:
                item.job.queue_time = max(item.job.queue_time, start - item.job.enqueued)
            groups: dict[Hashable, list[_Item]] = collections.defaultdict(list)
            for item in batch:
                groups[item.job.key].append(item)
            try:
                vectors = await loop.run_in_executor(self.model_executor, self._encode_groups, groups)
            except Exception as err:  # the model failed: fail these requests, keep serving
                self._fail(batch, err)
                continue
            seconds = time.perf_counter() - start
            self._deliver(groups, vectors, seconds)
            if self._on_batch is not None:
                self._on_batch(BatchStats(len(batch), sum(i.job.tokens[i.position] for i in batch), seconds))

    def _encode_groups(self, groups: dict[Hashable, list[_Item]]) -> dict[Hashable, list[np.ndarray]]:
        # Runs on the model thread: the inputs of each key planned into forward passes, one
        # encode call each; inputs with different keys never share one.
        vectors: dict[Hashable, list[np.ndarray]] = {}
        for key, items in groups.items():
            lengths = [i.job.tokens[i.position] for i in items]
            out: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
            for rows in self._plan(lengths) if self._plan is not None else [list(range(len(items)))]:
                inputs = [items[r].job.inputs[items[r].position] for r in rows]
                for r, vector in zip(rows, self._encode(inputs, key)):
                    out[r] = vector
            vectors[key] = out
        return vectors

    def _deliver(self, groups: dict[Hashable, list[_Item]], vectors: dict[Hashable, Any], seconds: float) -> None:
        touched: set[int] = set()
        for key, items in groups.items():
            for item, vector in zip(items, vectors[key]):
                job = item.job
                job.results[item.position] = vector
                job.remaining -= 1
                if id(job) not in touched:
                    touched.add(id(job))
                    job.inference_time += seconds
                if job.remaining == 0 and job.future is not None and not job.future.done():
                    job.future.set_result(None)

    def _fail(self, batch: list[_Item], err: Exception) -> None:
        for item in batch:
            item.job.cancelled = True  # its other inputs need not run either
            future = item.job.future
            if future is not None and not future.done():
                future.set_exception(err)
