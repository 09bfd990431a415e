"""Bounded admission queue in front of the model: finals, then speculative finals, then interims.

Jobs wait in a priority heap and `workers` tasks run them, one at a time each, in a dedicated
thread pool. Admission is decided at submit time, so latency is bounded by the queue size:
- a final is refused (`Overloaded`) only when `max_pending` finals already wait; a waiting interim
  (else a speculative pass) is evicted to make room for it;
- a speculative pass (a final started at a pause, before anyone asked for it) is skipped when the
  queue is full of finals, and replaces its own stream's waiting interim or speculative pass;
- an interim is skipped when any final waits or the queue is full, and replaces its own stream's
  older waiting interim, which is stale anyway.
`reprioritize` turns a stream's waiting speculative pass into a final (the flush came) or an
interim (the speaker went on). A job whose caller went away (cancelled future) leaves the heap.
With more than one worker, one is kept for finals: a final then never waits for a running interim
or speculative pass, and no interim starts while a final runs or waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar

from whisper_stt.metrics import WhisperMetrics

T = TypeVar("T")


class Priority(IntEnum):
    FINAL = 0
    SPECULATIVE = 1
    INTERIM = 2


class Overloaded(Exception):
    """The queue is full; try again after `retry_after_s`."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"transcription queue is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class InterimShed(Exception):
    """An interim or speculative pass was skipped or evicted under load (not an error for the client)."""


@dataclass(order=True)
class _Job:
    priority: Priority
    seq: int
    fn: Callable[[], Any] = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    stream_id: str | None = field(compare=False)
    enqueued_at: float = field(compare=False)


class TranscriptionQueue:
    def __init__(
        self, *, max_pending: int, workers: int, retry_after_s: int, metrics: WhisperMetrics | None = None
    ) -> None:
        self.max_pending = max_pending
        self.retry_after_s = retry_after_s
        self._metrics = metrics
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper-inference")
        self._workers = [
            asyncio.create_task(self._work(), name=f"whisper-worker-{i}") for i in range(workers)
        ]
        self._worker_count = workers
        self._interim_slots = max(1, workers - 1)
        self._running_interims = 0  # interims and speculative passes
        self._running_finals = 0
        self.running = 0

    @property
    def depth(self) -> int:
        return len(self._heap)

    def _finals_waiting(self) -> int:
        return sum(1 for job in self._heap if job.priority == Priority.FINAL)

    def _waiting(self, priority: Priority, stream_id: str | None = None) -> list[_Job]:
        return [
            job
            for job in self._heap
            if job.priority == priority and (stream_id is None or job.stream_id == stream_id)
        ]

    async def run(self, fn: Callable[[], T], *, priority: Priority, stream_id: str | None = None) -> T:
        """Run blocking `fn` in the pool once admitted; raises Overloaded or InterimShed."""
        future = self._admit(fn, priority, stream_id)
        return await future

    def _admit(self, fn: Callable[[], Any], priority: Priority, stream_id: str | None) -> asyncio.Future[Any]:
        # Jobs that an idle worker is about to take do not count as waiting.
        idle = self._worker_count - self.running
        full = len(self._heap) - idle >= self.max_pending
        if priority == Priority.FINAL:
            if self._finals_waiting() - idle >= self.max_pending:
                self._reject("queue_full")
            if full:
                evictable = self._waiting(Priority.INTERIM) or self._waiting(Priority.SPECULATIVE)
                self._shed(max(evictable, key=lambda job: job.seq))
        elif priority == Priority.SPECULATIVE:
            for job in self._waiting(Priority.INTERIM, stream_id) + self._waiting(priority, stream_id):
                self._shed(job)
            if len(self._heap) - idle >= self.max_pending:
                if not (interims := self._waiting(Priority.INTERIM)):
                    self._shed_new()
                self._shed(max(interims, key=lambda job: job.seq))
        else:
            if self._finals_waiting() or full:
                self._shed_new()
            for job in self._waiting(Priority.INTERIM, stream_id):
                self._shed(job)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        job = _Job(priority, next(self._seq), fn, future, stream_id, time.perf_counter())
        heapq.heappush(self._heap, job)
        future.add_done_callback(functools.partial(self._forget_if_cancelled, job))
        self._publish_depth()
        self._changed.set()
        return future

    def reprioritize(self, stream_id: str, old: Priority, new: Priority) -> bool:
        """Move `stream_id`'s waiting `old` jobs to `new`; False if none was waiting (done or running)."""
        jobs = self._waiting(old, stream_id)
        for job in jobs:
            job.priority = new
        if jobs:
            heapq.heapify(self._heap)
            self._changed.set()
        return bool(jobs)

    def _shed_new(self) -> None:
        if self._metrics:
            self._metrics.interims_shed.inc()
        raise InterimShed()

    def _reject(self, reason: str) -> None:
        if self._metrics:
            self._metrics.rejections.labels(reason).inc()
        raise Overloaded(self.retry_after_s)

    def _shed(self, job: _Job) -> None:
        self._forget(job)
        if not job.future.done():
            job.future.set_exception(InterimShed())
        if self._metrics:
            self._metrics.interims_shed.inc()

    def _forget_if_cancelled(self, job: _Job, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._forget(job)

    def _forget(self, job: _Job) -> None:
        with contextlib.suppress(ValueError):
            self._heap.remove(job)
            heapq.heapify(self._heap)
        self._publish_depth()

    def _publish_depth(self) -> None:
        if self._metrics:
            self._metrics.queue_depth.set(len(self._heap))

    def _runnable(self) -> bool:
        if not self._heap:
            return False
        top = self._heap[0].priority  # an interim or speculative pass only when no final waits
        if top == Priority.FINAL:
            return True
        if self._running_interims >= self._interim_slots:
            return False
        # An interim would share the cores with a running final and slow it down.
        return top == Priority.SPECULATIVE or self._running_finals == 0

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._runnable():
                self._changed.clear()
                await self._changed.wait()
            job = heapq.heappop(self._heap)
            self._publish_depth()
            if job.future.done():
                continue
            kind = job.priority.name.lower()
            started = time.perf_counter()
            if self._metrics:
                self._metrics.queue_wait.labels(kind).observe(started - job.enqueued_at)
            self.running += 1
            interim = job.priority != Priority.FINAL
            self._running_interims += interim
            self._running_finals += not interim
            try:
                result = await loop.run_in_executor(self._executor, job.fn)
            except Exception as e:  # noqa: BLE001 - handed to the caller, who maps it to its error
                if not job.future.done():
                    job.future.set_exception(e)
            else:
                if not job.future.done():
                    job.future.set_result(result)
            finally:
                self.running -= 1
                self._running_interims -= interim
                self._running_finals -= not interim
                self._changed.set()
                if self._metrics:
                    self._metrics.inference.labels(kind).observe(time.perf_counter() - started)

    async def aclose(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for job in list(self._heap):
            if not job.future.done():
                job.future.cancel()
        self._heap.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
