"""The serving model: the current classifier, swapped whole when models/LATEST changes.
A version that fails to load is refused, the old one keeps serving, and the error is shown.
A refused version is tried again on every tick of the watcher (git may check out LATEST
before the version's folder is complete) until it loads or LATEST changes; nothing the
files hold can stop the watcher."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ..classifier import Classifier
from ..training.artifact import LATEST, ArtifactError, load_model
from ..training.embeddings import encoder_for_model
from ..training.settings import Settings

log = logging.getLogger("tropes")


class ModelHolder:
    """Holds the serving classifier; reload() validates a new version before swapping it in.
    A failed reload keeps the old model and records the error for GET /model."""

    def __init__(self, settings: Settings, pinned: str | None = None, encoder=None):
        self.settings = settings
        self.pinned = pinned
        model = load_model(settings.models_dir, pinned)
        self.encoder = encoder or encoder_for_model(model, settings)
        self.classifier = Classifier(model, self.encoder, prefilter=settings.prefilter)
        self.last_error: str | None = None
        self.failed_attempts = 0  # reloads refused since the last good one
        self.listener = None  # called with state() after every reload (the service's metric)
        self.last_attempt: float | None = None
        self.loaded_at = time.time()
        self._pointer_state = self._pointer()
        self._lock = threading.Lock()

    def _pointer(self):
        """What LATEST holds now (bytes: an undecodable pointer must not raise here)."""
        try:
            path = Path(self.settings.models_dir) / LATEST
            return path.stat().st_mtime_ns, path.read_bytes().strip()
        except OSError:
            return None

    def state(self) -> dict:
        """For GET /model and the stale-model metric: is LATEST what is being served?"""
        wanted = self.pinned
        if wanted is None:
            pointer = self._pointer()
            wanted = pointer[1].decode("utf-8", "replace") if pointer else None
        return {"serving": self.classifier.version, "wanted": wanted,
                "up_to_date": self.last_error is None and wanted == self.classifier.version,
                "reload_error": self.last_error, "failed_attempts": self.failed_attempts,
                "retrying": self.last_error is not None and self.pinned is None}

    def reload(self) -> dict:
        """Load LATEST (or the pinned version) and swap it in if it is valid."""
        with self._lock:
            self._pointer_state = self._pointer()
            self.last_attempt = time.time()
            try:
                model = load_model(self.settings.models_dir, self.pinned)
                classifier = Classifier(model, self.encoder,
                                        prefilter=self.settings.prefilter)
            except Exception as exc:  # noqa: BLE001 - whatever it is, keep serving the old one
                message = str(exc) if isinstance(exc, ArtifactError) else \
                    f"unexpected {type(exc).__name__}: {exc}"
                if message != self.last_error:  # retries of the same failure log nothing new
                    log.error("model reload refused, still serving %s: %s",
                              self.classifier.version, message,
                              exc_info=not isinstance(exc, ArtifactError))
                self.last_error = message
                self.failed_attempts += 1
                self._report()
                return {"reloaded": False, "model": self.classifier.version, "error": message}
            changed = classifier.version != self.classifier.version
            self.classifier = classifier  # one reference swap: in-flight work keeps the old one
            self.last_error = None
            self.failed_attempts = 0
            self.loaded_at = time.time()
            if changed:
                log.info("now serving model %s", classifier.version)
            self._report()
            return {"reloaded": changed, "model": classifier.version, "error": None}

    def _report(self) -> None:
        if self.listener is not None:
            try:
                self.listener(self.state())
            except Exception:  # noqa: BLE001 - a metric must not fail a reload
                log.exception("model state listener failed")

    def pointer_changed(self) -> bool:
        return self.pinned is None and self._pointer() != self._pointer_state

    def tick(self) -> None:
        """One watcher step: reload when LATEST changed, or retry a refused version."""
        if self.pointer_changed() or (self.pinned is None and self.last_error is not None):
            self.reload()

    def watch(self, interval_s: float = 1.0) -> threading.Event:
        """Poll models/LATEST in a daemon thread and reload when it changes; set the
        returned event to stop it."""
        stop = threading.Event()

        def loop():
            while not stop.wait(interval_s):
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                    log.exception("model watcher: unexpected failure; watching on")

        threading.Thread(target=loop, name="tropes-model-watch", daemon=True).start()
        return stop
