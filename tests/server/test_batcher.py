"""The batching queue on its own, with a stand-in encode: grouping, the token budget, the
no-batching baseline, queue limits, cancelled and failed requests."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from sentembed.server.batcher import Batcher, QueueFull


def fake_encode(calls: list, gate: threading.Event | None = None):
    def encode(texts: list[str], key) -> np.ndarray:
        calls.append((list(texts), key))
        if gate is not None:
            gate.wait(5)
        if any(t == "boom" for t in texts):
            raise RuntimeError("model failed")
        return np.array([[len(t), hash(key) % 7] for t in texts], dtype=np.float32)
    return encode


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_concurrent_requests_share_batches_and_results_route_back():
    calls: list = []
    gate = threading.Event()

    async def main():
        b = Batcher(fake_encode(calls, gate), max_batch_tokens=1000)
        b.start()
        first = asyncio.create_task(b.submit(["a"], [1]))  # holds the model while others queue
        await asyncio.sleep(0.05)
        texts = [[f"{i}-{j}" * (i + 1) for j in range(3)] for i in range(5)]
        jobs = [asyncio.create_task(b.submit(t, [2] * 3)) for t in texts]
        await asyncio.sleep(0.05)
        gate.set()
        await first
        done = await asyncio.gather(*jobs)
        await b.close()
        return texts, done

    texts, jobs = run(main())
    assert [len(c[0]) for c in calls] == [1, 15]  # one batch of every waiting input
    for t, job in zip(texts, jobs):
        assert [r[0] for r in job.results] == [len(x) for x in t]  # each vector back to its asker, in order
        assert job.queue_time > 0 and job.inference_time > 0


def test_token_budget_and_keys_split_batches():
    calls: list = []
    gate = threading.Event()

    async def main():
        b = Batcher(fake_encode(calls, gate), max_batch_tokens=10)
        b.start()
        hold = asyncio.create_task(b.submit(["x"], [1]))
        await asyncio.sleep(0.05)
        a = asyncio.create_task(b.submit(["a"] * 4, [4] * 4, key=("q", None)))
        c = asyncio.create_task(b.submit(["c"], [1], key=(None, None)))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(hold, a, c)
        await b.close()

    run(main())
    sizes = [len(texts) for texts, _ in calls]
    assert sizes[0] == 1
    assert all(4 * n <= 10 or n == 1 for n in sizes[1:])  # never over the budget (a lone input may be)
    assert {key for _, key in calls[1:]} == {("q", None), (None, None)}  # keys never share a call


def test_batching_off_runs_each_request_alone():
    calls: list = []
    gate = threading.Event()

    async def main():
        b = Batcher(fake_encode(calls, gate), batching=False)
        b.start()
        hold = asyncio.create_task(b.submit(["x"], [1]))
        await asyncio.sleep(0.05)
        jobs = [asyncio.create_task(b.submit(["a", "b"], [1, 1])) for _ in range(3)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(hold, *jobs)
        await b.close()

    run(main())
    assert [len(c[0]) for c in calls] == [1, 2, 2, 2]


def test_queue_full_cancel_and_failure():
    calls: list = []
    gate = threading.Event()

    async def main():
        b = Batcher(fake_encode(calls, gate), max_queue_items=3)
        b.start()
        hold = asyncio.create_task(b.submit(["x"], [1]))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await b.submit(["a"] * 4, [1] * 4)
        gone = asyncio.create_task(b.submit(["gone", "gone"], [1, 1]))
        await asyncio.sleep(0.01)
        gone.cancel()
        bad = asyncio.create_task(b.submit(["boom"], [1]))
        await asyncio.sleep(0.01)
        assert b.depth == 3
        gate.set()
        await hold
        with pytest.raises(RuntimeError, match="model failed"):
            await bad
        ok = await b.submit(["fine"], [1])  # the worker lives on after a failure
        await b.close()
        return ok

    ok = run(main())
    assert ok.results[0][0] == 4
    assert all("gone" not in texts for texts, _ in calls)  # a request whose client left is not computed


def test_a_plan_cuts_each_key_into_forward_passes_and_results_route_back():
    from sentembed.model.batching import plan_batches

    calls: list = []
    gate = threading.Event()

    async def main():
        b = Batcher(fake_encode(calls, gate), plan=lambda lengths: plan_batches(lengths, 8, 3))
        b.start()
        hold = asyncio.create_task(b.submit(["x"], [1]))
        await asyncio.sleep(0.05)
        texts = ["aa", "bbbb", "c", "dddddd", "ee", "f", "gggg"]
        job = asyncio.create_task(b.submit(texts, [len(t) for t in texts]))
        await asyncio.sleep(0.05)
        gate.set()
        await hold
        done = await job
        await b.close()
        return texts, done

    texts, job = run(main())
    assert [r[0] for r in job.results] == [len(t) for t in texts]  # back in input order
    passes = [c[0] for c in calls[1:]]
    assert sorted(t for p in passes for t in p) == sorted(texts)  # each input computed once
    for p in passes:  # each pass is one planned batch: padded size within 8 (or alone), at most 3
        assert len(p) <= 3 and (len(p) * max(map(len, p)) <= 8 or len(p) == 1)
        assert [len(t) for t in p] == sorted((len(t) for t in p), reverse=True)  # longest first
