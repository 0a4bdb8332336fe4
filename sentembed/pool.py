"""EncodePool: data-parallel encoding in worker processes, one model each.

On a machine with many cores, N processes with a few threads each often beat one process
with all the threads (small batches do not scale across many threads). Each worker loads
the same model with the same options and `torch.set_num_threads(threads_per_worker)`;
`pool.encode` returns exactly what `SentenceEncoder.encode` would.

    from sentembed.pool import EncodePool
    with EncodePool(enc, workers=4) as pool:             # a SentenceEncoder, or a model name or path
        vectors = pool.encode(texts, batch_size=32)      # (len(texts), 768), input order

The pool sits above the encoder: it takes one, and the encoder knows nothing of it
(docs/ARCHITECTURE.md).

Workers are started with the "spawn" method: forking a process that holds torch's thread
pools (or CUDA) can deadlock. The pool serves one `encode` call at a time.
"""
from __future__ import annotations

import inspect
import multiprocessing as mp
import os
import pickle
import queue
import shutil
import signal
import tempfile
import time
import traceback
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .encoder import PROGRESS_THRESHOLD, SentenceEncoder, load, validate_texts
from .model.batching import estimated_tokens, plan_batches
from .precision import quantize as quantize_precision

# How long the parent waits on the result queue before looking again whether workers live:
# a killed worker is noticed within this, whatever the timeout.
_POLL_S = 0.2
# Seconds close() gives workers to finish their chunk and exit before terminating them.
_STOP_GRACE_S = 5.0
_ENCODE_SIGNATURE = inspect.signature(SentenceEncoder.encode)


class EncodePool:
    """N worker processes, each with its own copy of one model.

    model: a path or name (as for `sentembed.load`) or a loaded `SentenceEncoder` (saved to
    a temporary directory for the workers, since it does not record where it came from).
    threads_per_worker: default torch.get_num_threads() // workers, so the pool uses the
    threads this process was given (torch.set_num_threads or OMP_NUM_THREADS), not more.
    timeout: the longest wait, in seconds, for any word from the workers (a model loaded,
    a chunk done) before giving up; None waits as long as they are alive. A worker that
    dies is reported at once either way.

    >>> with EncodePool(model_dir, workers=2) as pool:
    ...     pool.encode(["first", "second"]).shape
    (2, 768)
    """

    def __init__(self, model: SentenceEncoder | str | os.PathLike, workers: int = 2,
                 threads_per_worker: int | None = None, *, device: str | None = None, dtype: str | None = None,
                 backend: str = "torch", quantize: str | None = None, file_name: str | None = None,
                 chunk_size: int = 256, timeout: float | None = None):
        from .backends import check_choices

        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if threads_per_worker is None:
            threads_per_worker = max(1, torch.get_num_threads() // workers)
        if threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be at least 1, got {threads_per_worker}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.workers, self.threads_per_worker = workers, threads_per_worker
        self.chunk_size, self.timeout = chunk_size, timeout
        self._tmp: str | None = None
        if isinstance(model, SentenceEncoder):
            device, dtype = device or str(model.device), dtype or model.dtype
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        check_choices(backend, quantize, dtype or "float32", torch.device(device))
        if isinstance(model, SentenceEncoder):
            path = self._save_for_workers(model)
        else:
            from .model import resolve_model

            # Resolved once here: a missing model fails now, naming the places searched, and
            # N workers do not race to unpack the same name into the cache.
            path = resolve_model(model)
        self.path = Path(path)
        self.load_options = dict(device=device, dtype=dtype, backend=backend, quantize=quantize, file_name=file_name)

        context = mp.get_context("spawn")
        self._tasks = context.Queue()
        self._results = context.Queue()
        self._processes = [
            context.Process(target=_worker_main, name=f"sentembed-pool-{i}", daemon=True,
                            args=(i, str(self.path), self.load_options, threads_per_worker, self._tasks, self._results))
            for i in range(workers)
        ]
        # Stops the workers and removes the temporary model even if close() is never called.
        self._finalizer = weakref.finalize(self, _shut_down, self._processes, self._tasks, self._results, self._tmp)
        self._broken: str | None = None
        self._calls = 0
        self.worker_info: list[dict[str, Any]] = [{} for _ in range(workers)]
        try:
            for process in self._processes:
                process.start()
            self._wait_until_ready()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------
    def _save_for_workers(self, encoder: SentenceEncoder) -> Path:
        from .backends.session import BackendRunner

        runtime = encoder.pipeline.transformer.mpnet
        if isinstance(runtime, BackendRunner):
            raise ValueError(f"this encoder runs {runtime.source} through the {runtime.backend} backend and cannot be "
                             "saved for the workers; pass EncodePool the model path with the same backend=, "
                             "quantize= and file_name= instead")
        self._tmp = tempfile.mkdtemp(prefix="sentembed-pool-")
        try:
            encoder.save(Path(self._tmp) / "model")
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        return Path(self._tmp) / "model"

    def _wait_until_ready(self) -> None:
        waiting = set(range(self.workers))
        while waiting:
            message = self._receive(f"loading {self.path}")
            kind, worker = message[0], message[1]
            if kind == "load_failed":
                raise RuntimeError(f"pool worker {worker} (pid {self._processes[worker].pid}) could not load "
                                   f"{self.path}: {message[2]}")
            if kind == "ready":
                self.worker_info[worker] = message[2]
                waiting.discard(worker)

    @property
    def pids(self) -> list[int | None]:
        """The workers' process ids."""
        return [p.pid for p in self._processes]

    def close(self) -> None:
        """Stop the workers (terminating any that do not stop in a few seconds) and clean up."""
        self._broken = self._broken or "the pool is closed"
        self._finalizer()

    def __enter__(self) -> EncodePool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"EncodePool({str(self.path)!r}, workers={self.workers}, threads_per_worker={self.threads_per_worker}, "
                f"{', '.join(f'{k}={v!r}' for k, v in self.load_options.items() if v is not None)})")

    # -- encoding ----------------------------------------------------------------------
    def encode(self, texts: str | Sequence[str], **encode_kwargs) -> np.ndarray | torch.Tensor:
        """`SentenceEncoder.encode(texts, **encode_kwargs)`, spread over the workers.

        >>> pool.encode("one text").shape, pool.encode(["a", "b"], precision="int8").dtype
        ((768,), dtype('int8'))
        """
        if self._broken:
            raise RuntimeError(f"this EncodePool can no longer encode: {self._broken}")
        items, single = validate_texts(texts)
        bound = _ENCODE_SIGNATURE.bind(None, items, **encode_kwargs)  # TypeError for unknown arguments
        bound.apply_defaults()
        options = {k: v for k, v in bound.arguments.items() if k not in ("self", "texts")}
        self._calls += 1
        # The encoder checks its own options: encoding no texts raises what encode() would
        # raise (an unknown prompt_name, a bad truncate_dim) before any text is sent, and
        # gives the empty result's exact shape and dtype.
        empty = self._run([[]], {**options, "show_progress": False})[0]
        if not items:
            output = empty
        else:
            work = {**options, "precision": "float32", "convert_to": "numpy", "show_progress": False}
            vectors = self._map(items, work, options["show_progress"])
            # int8/uint8 ranges come from the whole batch, so quantize after reassembly.
            output = quantize_precision(vectors, options["precision"])
        if options["convert_to"] == "torch":
            output = torch.from_numpy(output)
        return output[0] if single else output

    def _map(self, texts: list[str], options: dict, show_progress: bool | None) -> np.ndarray:
        """Embed texts in chunks of similar length, returned in input order."""
        chunks = self._chunks(texts)
        show = len(texts) > PROGRESS_THRESHOLD if show_progress is None else show_progress
        with tqdm(total=len(texts), disable=not show, desc="encode", unit="text") as bar:
            parts = self._run([[texts[i] for i in rows] for rows in chunks], options, bar.update)
        output = np.empty((len(texts), parts[0].shape[1]), dtype=parts[0].dtype)
        for rows, part in zip(chunks, parts):
            output[rows] = part
        return output

    def _chunks(self, texts: list[str]) -> list[list[int]]:
        """Row indices, longest texts first, cut so that chunks cost about the same: long
        ones go first (the last chunks to finish are then short) and fast workers take more.
        Tokens are guessed from characters: the workers tokenize, so the parent does not."""
        max_seq_length = int(self.worker_info[0].get("max_seq_length", 512))
        cost = [estimated_tokens(t, max_seq_length) for t in texts]
        # About 4 chunks a worker for balance, but at most chunk_size texts to bound memory.
        target = max(1, sum(cost) // (4 * self.workers))
        return plan_batches(cost, target, self.chunk_size, packed=True)

    def _run(self, chunks: list[list[str]], options: dict, done=lambda n: None) -> list[np.ndarray]:
        """Send chunks (at most two a worker in flight) and collect the results in order."""
        call = self._calls
        results: list[np.ndarray | None] = [None] * len(chunks)
        pending, in_flight = deque(range(len(chunks))), set()
        failure: tuple[int, BaseException | None, str] | None = None
        while pending or in_flight:
            while pending and len(in_flight) < 2 * self.workers and failure is None:
                index = pending.popleft()
                self._tasks.put((call, index, chunks[index], options))
                in_flight.add(index)
            message = self._receive(f"encoding chunk(s) {sorted(in_flight)[:5]}")
            if message[0] not in ("done", "failed") or message[2] != call:
                continue  # left over from an interrupted call
            index = message[3]
            in_flight.discard(index)
            if message[0] == "done":
                results[index] = message[4]
                done(len(chunks[index]))
            elif failure is None:
                failure = (message[1], message[4], message[5])
                pending.clear()  # let the chunks already sent finish, so the next call starts clean
        if failure is not None:
            worker, error, trace = failure
            if error is None:
                raise RuntimeError(f"pool worker {worker} failed:\n{trace}")
            error.add_note(f"(raised in pool worker {worker})")
            raise error
        return results

    def _receive(self, doing: str) -> tuple:
        """The next message from the workers; a RuntimeError if one died or none answered."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            for worker, process in enumerate(self._processes):
                if not process.is_alive():
                    self._broken = (f"pool worker {worker} (pid {process.pid}) died while {doing}: "
                                    f"{_exit_reason(process.exitcode)}")
                    raise RuntimeError(self._broken)
            try:
                return self._results.get(timeout=_POLL_S)
            except queue.Empty:
                pass
            if deadline is not None and time.monotonic() > deadline:
                self._broken = f"no pool worker answered for {self.timeout:g} s while {doing}"
                raise RuntimeError(self._broken)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _shut_down(processes: list, tasks, results, tmp: str | None) -> None:
    """Ask the workers to stop, terminate the ones that do not, remove the temporary model."""
    for process in processes:
        if process.is_alive():
            try:
                tasks.put_nowait(None)
            except (ValueError, OSError):
                break
    deadline = time.monotonic() + _STOP_GRACE_S
    for process in processes:
        while process.is_alive() and time.monotonic() < deadline:
            _drain(results)  # a worker flushing a large result cannot exit until it is read
            process.join(_POLL_S)
    for process in processes:
        if process.pid is not None and process.is_alive():
            process.terminate()
            process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join()
    for channel in (tasks, results):
        # A dead reader may leave a queue's pipe full: do not wait to flush it at exit.
        channel.cancel_join_thread()
        channel.close()
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def _drain(results) -> None:
    try:
        while True:
            results.get_nowait()
    except (queue.Empty, ValueError, OSError):
        pass


# -- the worker process ------------------------------------------------------------------
def _worker_main(worker: int, path: str, load_options: dict, threads: int, tasks, results) -> None:
    """Load the model, say so, then encode chunks until told to stop (None)."""
    # Ctrl-C reaches the whole process group; the parent decides what stops, and when.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Before loading, so runtimes that size their thread pools at load (ONNX Runtime,
    # OpenVINO read torch's setting) see it too.
    torch.set_num_threads(threads)
    try:
        encoder = load(path, **load_options)
    except BaseException as err:
        results.put(("load_failed", worker, f"{type(err).__name__}: {err}"))
        # Stay alive until told to stop: a worker found dead reads as killed, and the cause
        # just sent would be lost.
        while tasks.get() is not None:
            pass
        return
    results.put(("ready", worker, {
        "pid": os.getpid(), "threads": torch.get_num_threads(), "device": str(encoder.device),
        "dimension": encoder.dimension, "max_seq_length": encoder.max_seq_length,
    }))
    while True:
        task = tasks.get()
        if task is None:
            return
        call, index, texts, options = task
        try:
            output = encoder.encode(texts, **options)
            if isinstance(output, torch.Tensor):
                output = output.numpy()
            results.put(("done", worker, call, index, output))
        except Exception as err:
            results.put(("failed", worker, call, index, _portable(err), traceback.format_exc()))


def _portable(error: BaseException) -> BaseException | None:
    """The exception if it survives pickling (the parent re-raises it as is), else None."""
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:
        return None
