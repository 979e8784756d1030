"""What the HTTP service runs on: the current predictor (swapped when models/LATEST changes)
and a micro-batcher that merges concurrent requests into encoder batches."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.artifact import LATEST, ArtifactError, load_model
from training.config import Settings
from training.embeddings import load_encoder
from training.predictor import Predictor

log = logging.getLogger("tropes")


class Overloaded(Exception):
    """The queue is full: the client should retry after a pause."""

    retry_after_s = 2


class ModelHolder:
    """Holds the serving predictor; reload() validates a new version before swapping it in.
    A failed reload keeps the old model and records the error for GET /model."""

    def __init__(self, settings: Settings, pinned: str | None = None, encoder=None):
        self.settings = settings
        self.pinned = pinned
        self.encoder = encoder or load_encoder(settings.encoder, settings.precision,
                                               settings.batch_size)
        self.predictor = Predictor(load_model(settings.models_dir, pinned), self.encoder)
        self.last_error: str | None = None
        self.loaded_at = time.time()
        self._pointer_state = self._pointer()
        self._lock = threading.Lock()

    def _pointer(self):
        try:
            path = Path(self.settings.models_dir) / LATEST
            return path.stat().st_mtime_ns, path.read_text().strip()
        except OSError:
            return None

    def reload(self) -> dict:
        """Load LATEST (or the pinned version) and swap it in if it is valid."""
        with self._lock:
            self._pointer_state = self._pointer()
            try:
                model = load_model(self.settings.models_dir, self.pinned)
                predictor = Predictor(model, self.encoder)
            except ArtifactError as exc:
                self.last_error = str(exc)
                log.error("model reload refused, still serving %s: %s",
                          self.predictor.version, exc)
                return {"reloaded": False, "model": self.predictor.version, "error": str(exc)}
            changed = predictor.version != self.predictor.version
            self.predictor = predictor  # one reference swap: in-flight work keeps the old one
            self.last_error = None
            self.loaded_at = time.time()
            if changed:
                log.info("now serving model %s", predictor.version)
            return {"reloaded": changed, "model": predictor.version, "error": None}

    def pointer_changed(self) -> bool:
        return self.pinned is None and self._pointer() != self._pointer_state

    def watch(self, interval_s: float = 1.0, stop: threading.Event | None = None) -> None:
        """Poll models/LATEST in a daemon thread and reload when it changes."""
        stop = stop or threading.Event()

        def loop():
            while not stop.wait(interval_s):
                if self.pointer_changed():
                    self.reload()

        threading.Thread(target=loop, name="tropes-model-watch", daemon=True).start()


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

    async def submit(self, texts: list[str]) -> tuple[Predictor, np.ndarray]:
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
                predictor = self.holder.predictor  # one version answers the whole batch
                texts = [t for r in batch for t in r.texts]
                try:
                    probs = await loop.run_in_executor(self.executor, predictor.probabilities,
                                                       texts)
                except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(exc)
                else:
                    k = 0
                    for r in batch:
                        if not r.future.done():
                            r.future.set_result((predictor, probs[k:k + r.size]))
                        k += r.size
                finally:
                    self.waiting -= size
                    self.batches += 1
        finally:
            self.running = False
