"""Dynamic batching: merge concurrent requests into one model call.

A model call on 64 texts costs little more than on one, so under load we wait a few milliseconds
after the first queued text for others to arrive, then run them together. Under light load the
wait is `max_wait_ms` at most; under heavy load the queue already holds a full batch by the time
the previous one finishes, so nobody waits at all.

    submit(texts) ─► chunks of ≤ max_batch_size ─► queue (bounded, in texts) ─► worker task
                                                                    │ takes ≤ max_batch_size
                                                                    ▼
    results in input order ◄─ futures ◄──────── one inference thread (torch is never called
                                                from two threads at once)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("slimtext.serve")

PredictFn = Callable[[list[str]], np.ndarray]


class QueueFullError(RuntimeError):
    """The queue holds `max_queue` texts already; the caller should retry later (HTTP 503)."""


class BatcherClosedError(RuntimeError):
    """The batcher is shutting down and takes no new work (HTTP 503)."""


class InferenceError(RuntimeError):
    """The model call failed for these texts; the cause is chained (HTTP 500)."""


@dataclass
class _Chunk:
    texts: list[str]
    future: asyncio.Future
    enqueued: float  # time.monotonic() when queued; the batch deadline counts from the oldest


@dataclass
class BatchStats:
    """Counters for tests and logs; Prometheus metrics are fed through `on_batch`."""

    batches: int = 0
    texts: int = 0
    largest_batch: int = 0
    errors: int = 0


class DynamicBatcher:
    """Run `predict_fn` (texts -> (N, C) array) on batches merged from concurrent `submit` calls.

    `on_batch(size, seconds)` is called after every model call (for metrics). Use as
    `await start()` ... `await close()`, both on the event loop that calls `submit`.
    """

    def __init__(
        self,
        predict_fn: PredictFn,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self.check_settings(max_batch_size, max_wait_ms, max_queue)
        self.predict_fn = predict_fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queue: deque[_Chunk] = deque()
        self._depth = 0  # texts in the queue (not in the running batch)
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @staticmethod
    def check_settings(max_batch_size: int, max_wait_ms: float, max_queue: int) -> None:
        """Raise ValueError for settings the batcher can't run with. Static, so `slimtext serve
        --workers N` can check them once in the parent instead of crashing every worker."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        # NaN fails `>= 0`; inf passed it, and a request that did not fill a batch waited forever
        if not 0 <= max_wait_ms < float("inf"):
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")

    @property
    def depth(self) -> int:
        """Texts waiting in the queue."""
        return self._depth

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._closed

    async def start(self) -> None:
        if self._worker is not None:
            raise RuntimeError("batcher already started")
        self._wakeup = asyncio.Event()
        # One thread: torch parallelises inside an op; two concurrent calls only fight for cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimtext-infer")
        self._worker = asyncio.create_task(self._run(), name="slimtext-batcher")

    async def run_in_worker(self, fn: Callable[[], object]) -> object:
        """`fn()` on the inference thread, between model calls: for work that must not overlap
        one (compiling every graph of a compiled backend at start-up)."""
        if self._executor is None:
            raise RuntimeError("batcher not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def submit(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities (N, C) for `texts`, in order. Raises QueueFullError, BatcherClosedError
        or InferenceError; a failure affects only this call's texts."""
        if self._worker is None or self._closed:
            raise BatcherClosedError("the server is shutting down")
        texts = list(texts)
        if not texts:
            raise ValueError("no texts")
        # All or nothing: a half-admitted request would hold queue space for a reply never sent.
        if self._depth + len(texts) > self.max_queue:
            raise QueueFullError(
                f"queue full ({self._depth} texts waiting, limit {self.max_queue})"
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        chunks = []
        for i in range(0, len(texts), self.max_batch_size):
            chunk = _Chunk(texts[i : i + self.max_batch_size], loop.create_future(), now)
            chunks.append(chunk)
            self._queue.append(chunk)
        self._depth += len(texts)
        self._wakeup.set()
        try:
            parts = await asyncio.gather(*(c.future for c in chunks))
        except BaseException:
            for c in chunks:  # a cancelled caller: don't let the worker run its leftover chunks
                c.future.cancel()
            # ... nor hold queue space with them: a client that hung up left its texts counted
            # against max_queue until the worker reached them, and live clients got 503.
            mine = {id(c) for c in chunks}
            gone = sum(len(c.texts) for c in self._queue if id(c) in mine)
            if gone:
                self._queue = deque(c for c in self._queue if id(c) not in mine)
                self._depth -= gone
            raise
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def close(self) -> None:
        """Stop taking work, finish everything already queued, then stop the worker thread."""
        self._closed = True
        if self._worker is None:
            return
        self._wakeup.set()
        await self._worker
        self._executor.shutdown(wait=True)

    # -- worker ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._fill(self._queue[0].enqueued + self.max_wait)
            batch = self._take()
            if batch:
                await self._infer(loop, batch)

    async def _fill(self, deadline: float) -> None:
        """Wait until a full batch is queued, the oldest text has waited max_wait, or closing."""
        while self._depth < self.max_batch_size and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Chunk]:
        batch, size = [], 0
        while self._queue and size + len(self._queue[0].texts) <= self.max_batch_size:
            chunk = self._queue.popleft()
            self._depth -= len(chunk.texts)
            if chunk.future.done():  # caller gone (cancelled); skip the work
                continue
            batch.append(chunk)
            size += len(chunk.texts)
        return batch

    async def _infer(self, loop: asyncio.AbstractEventLoop, batch: list[_Chunk]) -> None:
        texts = [t for c in batch for t in c.texts]
        try:
            probs = await self._call(loop, texts)
        except Exception as e:
            if len(batch) == 1:
                self._fail(batch[0], e)
                return
            # One bad request must not fail its neighbours: retry each chunk on its own.
            for chunk in batch:
                try:
                    self._resolve(chunk, await self._call(loop, chunk.texts))
                except Exception as e:
                    self._fail(chunk, e)
            return
        start = 0
        for chunk in batch:
            self._resolve(chunk, probs[start : start + len(chunk.texts)])
            start += len(chunk.texts)

    async def _call(self, loop: asyncio.AbstractEventLoop, texts: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        probs = np.asarray(await loop.run_in_executor(self._executor, self.predict_fn, texts))
        if probs.ndim != 2 or probs.shape[0] != len(texts):
            raise RuntimeError(f"predict_fn returned shape {probs.shape} for {len(texts)} texts")
        seconds = time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.texts += len(texts)
        self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
        if self.on_batch is not None:
            self.on_batch(len(texts), seconds)
        return probs

    def _resolve(self, chunk: _Chunk, probs: np.ndarray) -> None:
        if not chunk.future.done():
            chunk.future.set_result(probs)

    def _fail(self, chunk: _Chunk, e: Exception) -> None:
        self.stats.errors += 1
        log.error("inference failed for %d texts", len(chunk.texts), exc_info=e)
        if not chunk.future.done():
            err = InferenceError(f"inference failed: {type(e).__name__}")
            err.__cause__ = e
            chunk.future.set_exception(err)
