"""Adaptive micro-batching for the HTTP service.

Why by hand and not BentoML's `batchable=True`: BentoML's batcher waits up to max_latency_ms
for a batch to fill and sheds requests with 503 when its latency budget is short (measured:
1,285 of 2,000 concurrent requests shed at 500 ms), and it cannot batch the passages of one
/tag_document together with other requests. Here requests that arrive while the encoder is
busy are merged into the next encoder call, so the batch size follows the load with no fixed
wait, and one bounded queue gives a clear 503 with Retry-After."""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..classifier import Classifier
from .holder import ModelHolder
from .threads import ThreadTuner


def retry_soon() -> int:
    """Retry-After for a refused small request: 1 or 2 s at random, so clients that were
    refused together do not all come back in the same instant, the same ones last each time
    (measured: with a fixed 1 s, one client of 64 was refused 50 times in a row)."""
    return random.choice((1, 2))


class Overloaded(Exception):
    """The queue is full (or a small request could not be answered in time): the client
    should retry after retry_after_s."""

    def __init__(self, message: str, retry_after_s: int = 2):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future
    done: int = 0  # passages already encoded
    parts: list = field(default_factory=list)
    classifier: object = None  # the version that encoded its first part answers all of it
    submitted: float = 0.0  # time.monotonic() at admission
    interactive: bool = False  # small: held to max_wait_seconds
    may_exit: bool = True  # passages may stop at the early exit; evidence sentences may not
    exited: list = field(default_factory=list)

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
    whose caller has gone (its future cancelled) is dropped before it is encoded.

    With max_wait_seconds set, small requests (at most interactive_passages passages, a
    /tag) are held to that wait: one is admitted only when the rest of the encoder call in
    flight plus the small work queued ahead of it are estimated to fit, one not started
    within twice the wait (the estimate was wrong) is answered Overloaded, and while small
    requests arrive (within the last few seconds) each encoder call holds at most that much
    work, and calls alternate between small and large work, so a piece of a large request
    never holds them for long and large work is slowed, never starved; one not answered
    within answer_within_waits waits is refused then (its work dropped if not started).
    Without small traffic calls stay at max_batch: bulk throughput is not paid for an
    interactive client that is not there."""

    interactive_passages = 4
    answer_within_waits = 3  # a small request not answered within 3 waits (+ its own
    # encoding) gets Overloaded
    interactive_memory_s = 3.0  # how long one small request keeps encoder calls short

    def __init__(self, holder: ModelHolder, max_batch: int = 64, max_queue: int = 20_000,
                 max_queue_seconds: float | None = None,
                 max_wait_seconds: float | None = None, tuner: ThreadTuner | None = None):
        self.holder = holder
        self.tuner = tuner  # chooses torch's threads per call (the service passes one)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_queue_seconds = max_queue_seconds
        self.max_wait_seconds = max_wait_seconds or None  # 0 turns the budget off
        self.last_interactive = -1e9  # time.monotonic() of the last small request
        self.call_started = 0.0
        self.call_seconds = 0.0  # estimated length of the encoder call in flight
        self.queue: deque[_Request] = deque()
        self.large_turn = False  # alternates calls while small and large requests wait
        # heap of (since, seq, fn, args, future) for run_on_encoder_thread: the oldest
        # request's pieces first, so concurrent large requests finish one by one instead of
        # all together at the end
        self.chores: list = []
        self.chore_seq = 0
        self.chore_seconds: float | None = None  # measured, smoothed
        self.waiting = 0
        self.running = False
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="tropes-encoder")
        self.batches = 0
        self.seconds_per_passage: float | None = None  # measured, smoothed

    def queued_seconds(self, extra: int = 0) -> float:
        """Encoder-thread seconds of work queued: passages, and splitting and screening."""
        chores = len(self.chores) * (self.chore_seconds or 0.0)
        return (self.waiting + extra) * (self.seconds_per_passage or 0.0) + chores

    def _interactive(self, size: int) -> bool:
        return self.max_wait_seconds is not None and size <= self.interactive_passages

    def estimated_wait(self, size: int) -> float:
        """Seconds before a new small request of size passages would start encoding: the
        rest of the call in flight and the small work queued ahead of it (smallest first)."""
        in_flight = 0.0
        if self.running and self.call_seconds:
            in_flight = max(0.0, self.call_started + self.call_seconds - time.monotonic())
        ahead = sum(r.remaining for r in self.queue if r.remaining <= size)
        return in_flight + ahead * (self.seconds_per_passage or 0.0)

    async def run_on_encoder_thread(self, fn, *args, since: float | None = None):
        """fn(*args) (a large request's splitting or screening) on the encoder's thread,
        between two encoder calls, after the small requests waiting then: beside the
        encoder it would slow every call, and ahead of them it would hold them."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.chore_seq += 1
        heapq.heappush(self.chores, (time.monotonic() if since is None else since,
                                     self.chore_seq, fn, args, future))
        self._start(loop)
        return await future

    def _start(self, loop) -> None:
        if not self.running:
            self.running = True
            loop.create_task(self._drain())

    async def _run_chore(self, loop) -> None:
        _, _, fn, args, future = heapq.heappop(self.chores)
        if future.done():  # the caller left
            return
        self.call_started = time.monotonic()
        self.call_seconds = self.chore_seconds or 0.0
        started = time.perf_counter()
        try:
            value = await loop.run_in_executor(self.executor, fn, *args)
        except Exception as exc:  # noqa: BLE001 - the caller's own error
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(value)
        finally:
            took = time.perf_counter() - started
            old = self.chore_seconds
            self.chore_seconds = took if old is None else 0.8 * old + 0.2 * took
            self.call_seconds = 0.0

    def refuse_early(self) -> None:
        """Overloaded when the queue is already past its limits, so a large request is
        refused before its texts are split and screened (work a 503 would throw away)."""
        if self.waiting >= self.max_queue or (
                self.max_queue_seconds is not None
                and self.queued_seconds() > self.max_queue_seconds):
            raise Overloaded(f"about {self.queued_seconds():.1f} s of encoder work is queued "
                             f"(limit {self.max_queue_seconds:g} s); retry shortly")

    def _admit(self, size: int, interactive: bool) -> None:
        if interactive:
            self.last_interactive = time.monotonic()
            wait = self.estimated_wait(size)
            if wait > self.max_wait_seconds:
                raise Overloaded(f"the encoder is busy for about {wait:.2f} s, over the "
                                 f"{self.max_wait_seconds:g} s a small request may wait; "
                                 "retry shortly", retry_after_s=retry_soon())
            return  # it goes ahead of the large work, so the queue's length is not its wait
        if self.waiting == 0:
            return  # an idle encoder takes anything (limits on size are the routes')
        if self.waiting + size > self.max_queue:
            raise Overloaded(f"{self.waiting} passages are waiting; retry shortly")
        if self.max_queue_seconds is not None and \
                self.queued_seconds(size) > self.max_queue_seconds:
            raise Overloaded(f"about {self.queued_seconds():.1f} s of encoder work is queued "
                             f"(limit {self.max_queue_seconds:g} s); retry shortly")

    async def submit(self, texts: list[str], follow_up: bool = False
                     ) -> tuple[Classifier, np.ndarray, np.ndarray]:
        """(classifier, scores, exited). follow_up: the second step of an admitted request
        (evidence sentences: never stopped at the early exit), never refused for the small
        requests' wait once its first step was encoded."""
        interactive = not follow_up and self._interactive(len(texts))
        self._admit(len(texts), interactive)
        loop = asyncio.get_running_loop()
        request = _Request(texts, loop.create_future(), submitted=time.monotonic(),
                           interactive=interactive, may_exit=not follow_up)
        self.queue.append(request)
        self.waiting += len(texts)
        self._start(loop)
        if not interactive:
            return await request.future
        allowed = self.answer_within_waits * self.max_wait_seconds + \
            len(texts) * (self.seconds_per_passage or 0.0)  # + its own encoding
        try:  # a small request is answered in time or refused, never held
            return await asyncio.wait_for(asyncio.shield(request.future), allowed)
        except asyncio.TimeoutError:
            request.future.cancel()  # dropped before encoding if it has not started
            raise Overloaded(f"not answered within {allowed:.2f} s ({self.answer_within_waits}"
                             f" x {self.max_wait_seconds:g} s and its own encoding), the "
                             "time a small request is allowed; retry shortly",
                             retry_after_s=retry_soon()) from None

    def _drop_abandoned(self) -> None:
        for r in [r for r in self.queue if r.future.done()]:  # cancelled: the caller left
            self.queue.remove(r)
            self.waiting -= r.remaining
        if self.max_wait_seconds is None:
            return
        deadline = time.monotonic() - 2 * self.max_wait_seconds
        for r in [r for r in self.queue if r.interactive and r.done == 0
                  and r.submitted < deadline]:  # the estimate was wrong: answer, not wait
            self._finish(r)
            r.future.set_exception(Overloaded(
                f"not started within {2 * self.max_wait_seconds:g} s (twice the wait a "
                "small request is allowed); retry shortly", retry_after_s=retry_soon()))

    def call_size(self) -> int:
        """Passages per encoder call: max_batch, or the small requests' wait of work while
        they are arriving."""
        recent = time.monotonic() - self.last_interactive < self.interactive_memory_s
        if self.max_wait_seconds is None or not recent or not self.seconds_per_passage:
            return self.max_batch
        share = int(self.max_wait_seconds / self.seconds_per_passage)
        return max(1, min(self.max_batch, share))

    def _next_batch(self):
        """(classifier, [(request, passages to take)]): smallest remaining first, all
        pieces for one classifier version."""
        pinned = next((r.classifier for r in self.queue if r.classifier is not None), None)
        classifier = pinned or self.holder.classifier
        room, picks = self.call_size(), []
        order = sorted(self.queue, key=lambda r: r.remaining)
        if self.large_turn:
            order = [r for r in order if not r.interactive]
        elif order:  # the first small request is encoded whole, never across two calls
            room = max(room, order[0].remaining)
        for r in order:
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
                if not self.queue and not self.chores:
                    break
                small = any(r.interactive for r in self.queue)
                large = bool(self.chores) or any(not r.interactive for r in self.queue)
                # both kinds waiting: they take turns, so small requests wait at most one
                # call and large work (its splitting and screening included) is slowed,
                # never starved
                self.large_turn = (not self.large_turn) if small and large else large
                if self.large_turn and self.chores:
                    await self._run_chore(loop)
                    continue
                classifier, picks = self._next_batch()
                texts = [t for r, take in picks for t in r.texts[r.done:r.done + take]]
                may_exit = np.array([r.may_exit for r, take in picks for _ in range(take)],
                                    dtype=bool)
                started = time.perf_counter()
                self.call_started = time.monotonic()
                self.call_seconds = len(texts) * (self.seconds_per_passage or 0.0)
                try:
                    probs, exited = await loop.run_in_executor(
                        self.executor, self._encode, classifier, texts, may_exit)
                except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                    for r, _ in picks:
                        self._finish(r)
                        if not r.future.done():
                            r.future.set_exception(exc)
                else:
                    self._measure(time.perf_counter() - started, len(texts))
                    self._hand_out(classifier, picks, probs, exited)
                finally:
                    self.batches += 1
                    self.call_seconds = 0.0
        finally:
            self.running = False

    def _encode(self, classifier, texts: list[str], may_exit: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, exited): through the early exit where the classifier has one."""
        threads = self.tuner.choose() if self.tuner is not None else None
        started = time.perf_counter()
        if hasattr(classifier, "exit_scores"):
            probs, exited = classifier.exit_scores(texts, may_exit)
        else:  # a plain scorer (tests' stand-ins): the whole encoder
            probs, exited = classifier.head_scores(texts), np.zeros(len(texts), dtype=bool)
        if self.tuner is not None:
            self.tuner.record(threads, time.perf_counter() - started, len(texts))
        return probs, exited

    def _measure(self, seconds: float, passages: int) -> None:
        per = seconds / max(passages, 1)
        old = self.seconds_per_passage
        self.seconds_per_passage = per if old is None else 0.8 * old + 0.2 * per

    def _hand_out(self, classifier, picks, probs: np.ndarray, exited: np.ndarray) -> None:
        k = 0
        for r, take in picks:
            r.parts.append(probs[k:k + take])
            r.exited.append(exited[k:k + take])
            r.done += take
            r.classifier = classifier
            self.waiting -= take
            k += take
            if r.remaining == 0:
                self.queue.remove(r)
                if not r.future.done():
                    r.future.set_result((classifier, np.concatenate(r.parts),
                                         np.concatenate(r.exited)))

    def _finish(self, r: _Request) -> None:
        if r in self.queue:
            self.queue.remove(r)
            self.waiting -= r.remaining
