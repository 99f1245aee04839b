"""Requests that arrive together are read together: one forward pass for all of them, off the event loop.

Each request hands its image to :meth:`Batcher.read` and awaits the result. One worker thread takes what is
waiting — everything queued while it was busy, or, when it was idle, what arrives within ``max_wait`` of the
first request — and reads it with the reader's own batched methods. Under load the batches grow by themselves,
so throughput grows with it; a lone request waits at most ``max_wait`` for company.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnistctl.reader import Reader
    from mnistctl.results import Reading


class Stopping(Exception):
    """A request that came after the server began to stop."""


@dataclass(frozen=True)
class Job:
    """One image to read: ``kind`` "digit" or "number", with the reader's keyword options for it."""

    kind: str
    image: bytes
    options: tuple[tuple[str, Any], ...]
    future: asyncio.Future[Reading] = field(compare=False)


class Batcher:
    """Reads the jobs of concurrent requests in batches of at most ``max_batch`` images."""

    def __init__(self, reader: Reader, *, max_batch: int = 64, max_wait: float = 0.0) -> None:
        self.reader = reader
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batches = 0  # how many batches were read, and how many images they held (for /healthz)
        self.images = 0
        self._queue: deque[Job] = deque()
        self._wake = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="mnistctl-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in hand, answer what is still queued, and end the worker."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    async def read(self, kind: str, image: bytes, **options: Any) -> Reading:
        """The reading of ``image``, read in a batch with whatever other requests are waiting."""
        assert self._loop is not None, "Batcher.start() was not called"
        job = Job(kind, image, tuple(sorted(options.items())), self._loop.create_future())
        with self._wake:
            if self._stopping:
                raise Stopping
            self._queue.append(job)
            self._wake.notify()
        return await job.future

    # ----------------------------------------------------------------------------------------- the worker

    def _work(self) -> None:
        while (jobs := self._next_batch()) is not None:
            try:
                results = self._read(jobs)
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear of it, not hang
                self._answer(jobs, exc=exc)
                continue
            self._answer(jobs, results)

    def _next_batch(self) -> list[Job] | None:
        """What is queued (up to ``max_batch``); when nothing was, the first job and what follows it within
        ``max_wait``. None once stopping with nothing left."""
        with self._wake:
            while not self._queue:
                if self._stopping:
                    return None
                self._wake.wait()
            if len(self._queue) == 1 and self.max_wait > 0 and not self._stopping:
                self._wake.wait_for(lambda: len(self._queue) >= self.max_batch or self._stopping, self.max_wait)
            return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]

    def _read(self, jobs: list[Job]) -> list[Reading]:
        """Each job's reading, in order: the jobs with the same kind and options go through the reader together."""
        groups: dict[tuple[str, tuple[tuple[str, Any], ...]], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job.kind, job.options), []).append(i)
        results: list[Reading | None] = [None] * len(jobs)
        for (kind, options), indices in groups.items():
            read = self.reader.read_numbers if kind == "number" else self.reader.read_digits
            images = [jobs[i].image for i in indices]
            readings = read(images, batch_size=len(images), workers=0, **dict(options))
            for i, reading in zip(indices, readings, strict=True):
                results[i] = reading
        self.batches += 1
        self.images += len(jobs)
        return results  # type: ignore[return-value]

    def _answer(self, jobs: list[Job], results: list[Reading] | None = None, exc: BaseException | None = None) -> None:
        """Hand each job its result (or ``exc``) on the event loop's thread."""
        outcomes = [(job.future, None if results is None else results[i], exc) for i, job in enumerate(jobs)]
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[tuple[asyncio.Future[Reading], Reading | None, BaseException | None]]) -> None:
    for future, result, exc in outcomes:
        if future.done():  # the client went away and its request was cancelled
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]
