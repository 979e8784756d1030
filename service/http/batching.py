"""Adaptive micro-batching for the HTTP service.

Why by hand and not BentoML's `batchable=True`: BentoML's batcher waits up to max_latency_ms
for a batch to fill and sheds requests with 503 when its latency budget is short (measured:
1,285 of 2,000 concurrent requests shed at 500 ms), and it cannot batch the passages of one
/tag_document together with other requests. Here requests that arrive while the encoder is
busy are merged into the next encoder call, so the batch size follows the load with no fixed
wait, and one bounded queue gives a clear 503 with Retry-After."""

from __future__ import annotations

import asyncio
import time
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
    done: int = 0  # passages already encoded
    parts: list = field(default_factory=list)
    classifier: object = None  # the version that encoded its first part answers all of it

    @property
    def remaining(self) -> int:
        return len(self.texts) - self.done


class MicroBatcher:
    """Requests that arrive while the encoder is busy are merged into the next batch
    (up to max_batch passages), so the batch size adapts to load with no fixed wait.

    Admission is in encoder time: the queue's passages times the measured seconds per
    passage; past max_queue_seconds (or max_queue passages) new work is refused with
    Overloaded (HTTP 503). Large requests are encoded in pieces of max_batch, smallest
    remaining request first, so a /tag never waits behind a whole 1,000-item batch. Work
    whose caller has gone (its future cancelled) is dropped before it is encoded."""

    def __init__(self, holder: ModelHolder, max_batch: int = 64, max_queue: int = 20_000,
                 max_queue_seconds: float | None = None):
        self.holder = holder
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_queue_seconds = max_queue_seconds
        self.queue: deque[_Request] = deque()
        self.waiting = 0
        self.running = False
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="tropes-encoder")
        self.batches = 0
        self.seconds_per_passage: float | None = None  # measured, smoothed

    def queued_seconds(self, extra: int = 0) -> float:
        return (self.waiting + extra) * (self.seconds_per_passage or 0.0)

    def _admit(self, size: int) -> None:
        if self.waiting == 0:
            return  # an idle encoder takes anything (limits on size are the routes')
        if self.waiting + size > self.max_queue:
            raise Overloaded(f"{self.waiting} passages are waiting; retry shortly")
        if self.max_queue_seconds is not None and \
                self.queued_seconds(size) > self.max_queue_seconds:
            raise Overloaded(f"about {self.queued_seconds():.1f} s of encoder work is queued "
                             f"(limit {self.max_queue_seconds:g} s); retry shortly")

    async def submit(self, texts: list[str]) -> tuple[Classifier, np.ndarray]:
        self._admit(len(texts))
        loop = asyncio.get_running_loop()
        request = _Request(texts, loop.create_future())
        self.queue.append(request)
        self.waiting += len(texts)
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        return await request.future

    def _drop_abandoned(self) -> None:
        for r in [r for r in self.queue if r.future.done()]:  # cancelled: the caller left
            self.queue.remove(r)
            self.waiting -= r.remaining

    def _next_batch(self):
        """(classifier, [(request, passages to take)]): smallest remaining first, all
        pieces for one classifier version."""
        pinned = next((r.classifier for r in self.queue if r.classifier is not None), None)
        classifier = pinned or self.holder.classifier
        room, picks = self.max_batch, []
        for r in sorted(self.queue, key=lambda r: r.remaining):
            if room == 0:
                break
            if r.classifier is not None and r.classifier is not classifier:
                continue
            take = min(r.remaining, room)
            picks.append((r, take))
            room -= take
        return classifier, picks

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._drop_abandoned()
                if not self.queue:
                    break
                classifier, picks = self._next_batch()
                texts = [t for r, take in picks for t in r.texts[r.done:r.done + take]]
                started = time.perf_counter()
                try:
                    probs = await loop.run_in_executor(self.executor, classifier.head_scores,
                                                       texts)
                except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                    for r, _ in picks:
                        self._finish(r)
                        if not r.future.done():
                            r.future.set_exception(exc)
                else:
                    self._measure(time.perf_counter() - started, len(texts))
                    self._hand_out(classifier, picks, probs)
                finally:
                    self.batches += 1
        finally:
            self.running = False

    def _measure(self, seconds: float, passages: int) -> None:
        per = seconds / max(passages, 1)
        old = self.seconds_per_passage
        self.seconds_per_passage = per if old is None else 0.8 * old + 0.2 * per

    def _hand_out(self, classifier, picks, probs: np.ndarray) -> None:
        k = 0
        for r, take in picks:
            r.parts.append(probs[k:k + take])
            r.done += take
            r.classifier = classifier
            self.waiting -= take
            k += take
            if r.remaining == 0:
                self.queue.remove(r)
                if not r.future.done():
                    r.future.set_result((classifier, np.concatenate(r.parts)))

    def _finish(self, r: _Request) -> None:
        if r in self.queue:
            self.queue.remove(r)
            self.waiting -= r.remaining
