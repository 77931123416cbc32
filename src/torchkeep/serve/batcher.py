"""Adaptive dynamic batching: no waiting when idle, batches form while the model is busy.

A request that finds the model idle runs at once. Requests that arrive while a batch computes
queue up, and the next batch takes all of them (up to `max_batch_rows`). The model runs in a
worker thread, so the event loop keeps accepting requests meanwhile. `max_wait_ms` > 0 adds a
short wait for company before a batch only when requests are already queued (under load), never
for a lone request on an idle server.

The exceptions to the worker thread: a lone small request while `idle()` says that no other request is
in the server runs on the event loop itself, through `run_now` straight from its handler (no queue, no
future: the handler gives the loop one turn first, so that a burst's other requests queue and batch), or
from the worker when it finds one alone. Handing it to the thread and back costs two thread wake-ups,
and with nothing else in flight the event loop has nothing to do meanwhile; requests that arrive during
it wait in the socket, then batch.

Each request may name its own predict function (the model that validated it): a batch holds requests of
one model only, so a model swapped in while requests wait (serve/models.py) never sees rows checked
against another model's schema.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("torchkeep")


Predict = Callable[[list[Any]], list[Any]]


@dataclass
class _Job:
    rows: list[Any]
    future: asyncio.Future[list[Any]]
    predict: Predict
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, predict: Predict, *, max_batch_rows: int = 512, max_wait_ms: float = 0.0,
                 idle: Callable[[], bool] = lambda: False, inline_max_rows: int = 16,
                 on_batch: Callable[[int], None] = lambda rows: None) -> None:
        self.predict, self.on_batch = predict, on_batch
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000
        self.idle, self.inline_max_rows = idle, inline_max_rows
        self.batches = 0
        self.rows = 0
        self.failure: BaseException | None = None
        self.busy = False  # a batch is being computed (inline or in the worker thread)
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torchkeep-model")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run())

    @property
    def depth(self) -> int:
        """Requests waiting for the model (not counting the batch it is computing)."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def alive(self) -> bool:
        return self._worker is not None and not self._worker.done() and self.failure is None

    async def submit(self, rows: list[Any], predict: Predict | None = None) -> list[Any]:
        return await self.enqueue(rows, predict)

    def run_now(self, rows: list[Any], predict: Predict) -> list[Any] | None:
        """The results of a lone small request computed right here on the event loop, when nothing else is
        queued, computing or in the server; None otherwise (then `enqueue` it). No queue hop, no future."""
        if self.busy or len(rows) > self.inline_max_rows or (self._queue is not None and not self._queue.empty()) \
                or not self.idle():
            return None
        self.on_batch(len(rows))
        try:
            results = predict(rows)
        except Exception as error:
            log.error("prediction failed for a request of %d rows: %s", len(rows), error)
            self.failure = error
            raise
        self.failure = None
        self.batches += 1
        self.rows += len(results)
        return results

    def enqueue(self, rows: list[Any], predict: Predict | None = None) -> asyncio.Future[list[Any]]:
        """The future of these rows' results (by `predict`, else the batcher's own); cancelling it
        before its batch runs skips them."""
        assert self._queue is not None, "Batcher.start() was not called"
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(rows, future, predict or self.predict))
        return future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            if self.max_wait_s and not self._queue.empty():
                await asyncio.sleep(self.max_wait_s)
            size, predict = len(jobs[0].rows), jobs[0].predict
            waiting = self._queue._queue  # type: ignore[attr-defined]  (a deque: peek at the next job)
            while waiting and size + len(waiting[0].rows) <= self.max_batch_rows and waiting[0].predict == predict:
                job = self._queue.get_nowait()
                jobs.append(job)
                size += len(job.rows)
            jobs = [job for job in jobs if not job.future.done()]  # callers that left are not computed
            if not jobs:
                continue
            rows = [row for job in jobs for row in job.rows]
            self.busy = True
            try:
                self.on_batch(len(rows))
                if len(jobs) == 1 and len(rows) <= self.inline_max_rows and self._queue.empty() and self.idle():
                    results = predict(rows)
                else:
                    results = await loop.run_in_executor(self._executor, predict, rows)
            except Exception as error:  # rows were validated, so this should not happen; if it does,
                if len(jobs) > 1:       # one request must not fail the others: run each on its own
                    log.warning("a batch of %d requests failed (%s); running them one by one", len(jobs), error)
                    for job in jobs:
                        await self._run_alone(job, loop)
                    continue
                self._fail(jobs[0], error)
                continue
            finally:
                self.busy = False
            self._succeed(jobs, results)

    async def _run_alone(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        if job.future.done():
            return
        try:
            results = await loop.run_in_executor(self._executor, job.predict, job.rows)
        except Exception as error:
            self._fail(job, error)
            return
        self._succeed([job], results)

    def _fail(self, job: _Job, error: Exception) -> None:
        log.error("prediction failed for a request of %d rows: %s", len(job.rows), error)
        self.failure = error  # /health says so until a batch succeeds again
        if not job.future.done():
            job.future.set_exception(error)

    def _succeed(self, jobs: list[_Job], results: list[Any]) -> None:
        self.failure = None
        self.batches += 1
        self.rows += len(results)
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(results[start : start + len(job.rows)])
            start += len(job.rows)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)
