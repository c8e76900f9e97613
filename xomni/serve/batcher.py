"""Dynamic batching: a bounded queue and one worker thread that owns the model.

Requests from any number of clients wait in one queue. The worker takes the oldest and merges every queued request
that can share its sampler call (same kind and same merge key, i.e. the same sampling settings) up to `max_batch`
rows, runs them as one batch, and hands each client its own result. Because new requests pile up while a batch
runs, the batch grows with the load: no fixed waiting window is needed. The queue is bounded (`QueueFull` -> 429
with a Retry-After estimate) and every request carries a deadline: one still queued when it passes is answered
`DeadlineExceeded` instead of being run. `close()` stops taking requests and lets the worker drain the queue.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import threading
import time
from typing import Any, Callable


class QueueFull(Exception):
    def __init__(self, retry_after: int, queued: int):
        super().__init__(f"the server queue is full ({queued} requests waiting); retry after {retry_after} s")
        self.retry_after, self.queued = retry_after, queued


class DeadlineExceeded(Exception):
    pass


class ShuttingDown(Exception):
    pass


@dataclasses.dataclass(eq=False)
class Job:
    kind: str                       # "generate" | "caption": which runner takes it
    key: Any                        # jobs merge only with equal keys
    rows: int                       # sampler rows (images) it adds to a batch
    work: Any                       # what the runner gets
    deadline: float                 # time.monotonic() after which it is not started
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future | None = None
    enqueued: float = dataclasses.field(default_factory=time.monotonic)
    started: float | None = None
    batch_rows: int = 0             # rows of the batch it ran in (for clients and the load test)
    cancelled: bool = False         # the client went away: skip it if not started

    def resolve(self, result: Any = None, error: BaseException | None = None) -> None:
        """Complete the client's future from the worker thread."""
        if self.loop is None or self.future is None:
            return

        def _set():
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
        try:
            self.loop.call_soon_threadsafe(_set)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass


class Batcher:
    def __init__(self, runners: dict[str, Callable[[list], list]], max_batch: int, max_queue: int):
        self.runners, self.max_batch, self.max_queue = runners, max_batch, max_queue
        self._queue: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="xomni-serve-worker", daemon=True)
        self._busy = 0                   # rows of the batch being run
        self._batch_s = 0.0              # moving average of one batch's wall time (for Retry-After)
        self.stats = {"batches": 0, "rows": 0, "requests": 0, "max_batch_rows": 0, "expired": 0, "cancelled": 0,
                      "errors": 0}

    # ------------------------------------------------------------------ client side (event loop thread)
    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def submit(self, job: Job) -> Job:
        with self._cv:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(self.retry_after(), len(self._queue))
            self._queue.append(job)
            self._cv.notify()
        return job

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved by a batch: (batches ahead + 1) x the mean batch time."""
        queued_rows = sum(j.rows for j in self._queue)
        batches = math.ceil(queued_rows / self.max_batch) + 1
        return max(1, math.ceil(batches * (self._batch_s or 1.0)))

    def cancel(self, job: Job) -> None:
        """The client disconnected: drop the job if it is still queued (a running batch finishes regardless)."""
        with self._cv:
            job.cancelled = True
            if job in self._queue:
                self._queue.remove(job)
                self.stats["cancelled"] += 1

    def status(self) -> dict:
        with self._cv:
            return {"queued": len(self._queue), "queued_rows": sum(j.rows for j in self._queue),
                    "running_rows": self._busy, "max_batch": self.max_batch, "max_queue": self.max_queue,
                    "mean_batch_s": round(self._batch_s, 4), **self.stats}

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs, let the worker finish the queued ones, wait for it."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ worker thread
    def _take(self) -> list[Job] | None:
        with self._cv:
            while not self._queue and not self._closing:
                self._cv.wait()
            if not self._queue:
                return None                    # closing and drained
            head = self._queue.popleft()
            batch, rows = [head], head.rows
            for j in list(self._queue):         # oldest first: merge what fits and matches
                if rows >= self.max_batch:
                    break
                if j.kind == head.kind and j.key == head.key and rows + j.rows <= self.max_batch:
                    self._queue.remove(j)
                    batch.append(j)
                    rows += j.rows
            self._busy = rows
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            now = time.monotonic()
            live = []
            for j in batch:
                if j.cancelled:
                    self.stats["cancelled"] += 1
                elif now > j.deadline:
                    self.stats["expired"] += 1
                    j.resolve(error=DeadlineExceeded(
                        f"the request waited {now - j.enqueued:.1f} s in the queue, past its deadline"))
                else:
                    live.append(j)
            if live:
                self._run(live)
            with self._cv:
                self._busy = 0

    def _run(self, jobs: list[Job]) -> None:
        rows = sum(j.rows for j in jobs)
        t0 = time.monotonic()
        for j in jobs:
            j.started, j.batch_rows = t0, rows
        try:
            results = self.runners[jobs[0].kind]([j.work for j in jobs])
        except Exception as e:  # the whole batch failed: every client hears why
            self.stats["errors"] += 1
            results = [e] * len(jobs)
        dt = time.monotonic() - t0
        self._batch_s = dt if not self._batch_s else 0.8 * self._batch_s + 0.2 * dt
        self.stats["batches"] += 1
        self.stats["rows"] += rows
        self.stats["requests"] += len(jobs)
        self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], rows)
        for j, r in zip(jobs, results):
            if isinstance(r, BaseException):
                j.resolve(error=r)
            else:
                j.resolve(result=r)
