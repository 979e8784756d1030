"""The serving model: the current classifier, swapped whole when models/LATEST changes.
A version that fails to load is refused, the old one keeps serving, and the error is shown."""

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
        self.classifier = Classifier(model, self.encoder)
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
                classifier = Classifier(model, self.encoder)
            except ArtifactError as exc:
                self.last_error = str(exc)
                log.error("model reload refused, still serving %s: %s",
                          self.classifier.version, exc)
                return {"reloaded": False, "model": self.classifier.version, "error": str(exc)}
            changed = classifier.version != self.classifier.version
            self.classifier = classifier  # one reference swap: in-flight work keeps the old one
            self.last_error = None
            self.loaded_at = time.time()
            if changed:
                log.info("now serving model %s", classifier.version)
            return {"reloaded": changed, "model": classifier.version, "error": None}

    def pointer_changed(self) -> bool:
        return self.pinned is None and self._pointer() != self._pointer_state

    def watch(self, interval_s: float = 1.0) -> threading.Event:
        """Poll models/LATEST in a daemon thread and reload when it changes; set the
        returned event to stop it."""
        stop = threading.Event()

        def loop():
            while not stop.wait(interval_s):
                if self.pointer_changed():
                    self.reload()

        threading.Thread(target=loop, name="tropes-model-watch", daemon=True).start()
        return stop
