"""Adaptive micro-batching for the HTTP service.

Why by hand and not BentoML's `batchable=True`: BentoML's batcher waits up to max_latency_ms
for a batch to fill and sheds requests with 503 when its latency budget is short (measured:
1,285 of 2,000 concurrent requests shed at 500 ms), and it cannot batch the passages of one
/tag_document together with other requests. Here requests that arrive while the encoder is
busy are merged into the next encoder call, so the batch size follows the load with no fixed
wait, and one bounded queue gives a clear 503 with Retry-After."""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..classifier import Classifier
from .holder import ModelHolder


class Overloaded(Exception):
    """The queue is full: the client should retry after a pause."""

    retry_after_s = 2


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future
    size: int = field(init=False)

    def __post_init__(self):
        self.size = len(self.texts)


class MicroBatcher:
    """Requests that arrive while the encoder is busy are merged into the next batch
    (up to max_batch passages), so the batch size adapts to load with no fixed wait.
    Past max_queue waiting passages, new work is refused with Overloaded (HTTP 503)."""

    def __init__(self, holder: ModelHolder, max_batch: int = 64, max_queue: int = 20_000):
        self.holder = holder
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.queue: deque[_Request] = deque()
        self.waiting = 0
        self.running = False
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="tropes-encoder")
        self.batches = 0

    async def submit(self, texts: list[str]) -> tuple[Classifier, np.ndarray]:
        if self.waiting + len(texts) > self.max_queue and self.waiting > 0:
            raise Overloaded(f"{self.waiting} passages are waiting; retry shortly")
        loop = asyncio.get_running_loop()
        request = _Request(texts, loop.create_future())
        self.queue.append(request)
        self.waiting += request.size
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        return await request.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.queue:
                batch = [self.queue.popleft()]
                size = batch[0].size
                while self.queue and size + self.queue[0].size <= self.max_batch:
                    size += self.queue[0].size
                    batch.append(self.queue.popleft())
                classifier = self.holder.classifier  # one version answers the whole batch
                texts = [t for r in batch for t in r.texts]
                try:
                    probs = await loop.run_in_executor(self.executor, classifier.scores,
                                                       texts)
                except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(exc)
                else:
                    k = 0
                    for r in batch:
                        if not r.future.done():
                            r.future.set_result((classifier, probs[k:k + r.size]))
                        k += r.size
                finally:
                    self.waiting -= size
                    self.batches += 1
        finally:
            self.running = False
