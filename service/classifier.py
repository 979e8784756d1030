"""The classifier: one object that owns the encoder, the head, the labels and thresholds,
with one load entry (`tropes.load`). Plain Python shared by the CLI, the service, bulk
scoring, Ray actors, benchmarks and tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .result import Evidence, TagResult
from .splitter import split_passages
from .training.artifact import ArtifactError, Model, load_model
from .training.embeddings import Encoder, check_encoder_matches, encoder_for_model
from .training.features import build_features
from .training.settings import Settings, load_settings
from .training.taxonomy import portrayal_of

WINDOW_MARGIN = 16  # special tokens plus slack between our count and the encoder's


class Classifier:
    def __init__(self, model: Model, encoder: Encoder, profile: str | None = None):
        check_encoder_matches(model, encoder)
        self.model = model
        self.encoder = encoder
        self.labels = list(model.labels)
        self.groups = list(model.groups)
        self.profile = profile
        self.thresholds = model.threshold_vector(profile)
        self.misaligned = np.array([g == "misaligned" for g in model.groups])
        self.window = max(encoder.max_tokens - WINDOW_MARGIN, 16)

    @property
    def version(self) -> str:
        return self.model.version

    def scores(self, texts: list[str]) -> np.ndarray:
        """The head's calibrated scores: one column per label, then one per group."""
        if not texts:
            return np.zeros((0, self.model.head.coef.shape[0]))
        features = build_features(self.encoder.encode(texts), self.model.prototypes)
        return self.model.head.predict_proba(features)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Per-label probabilities, one row per text, one column per label."""
        return self.scores(texts)[:, :len(self.labels)]

    def results(self, scores: np.ndarray) -> list[TagResult]:
        present = self.model.present(scores, self.profile)
        mis = (present & self.misaligned).any(axis=1)
        ali = (present & ~self.misaligned).any(axis=1)
        rounded = np.round(scores.astype(np.float64), 4).tolist()
        n = len(self.labels)
        group_ids = self.model.group_ids
        return [TagResult(labels=[lb for lb, f in zip(self.labels, flags) if f],
                          scores=dict(zip(self.labels, row[:n])), portrayal=portrayal_of(m, a),
                          group_scores=dict(zip(group_ids, row[n:])) if group_ids else None)
                for row, flags, m, a in zip(rounded, present.tolist(), mis.tolist(),
                                            ali.tolist())]

    def tag(self, texts: list[str]) -> list[TagResult]:
        """Tag passages: labels, probabilities, group scores and the portrayal of each."""
        return self.results(self.scores(texts))

    def split(self, text: str):
        return split_passages(text, self.window, self.encoder.count_tokens)

    def tag_documents(self, texts: list[str]) -> list[TagResult]:
        """Each document: split, tag every passage (one encoder call for all), aggregate."""
        spans = [self.split(t) for t in texts]
        pieces = [t[s.start:s.end] for t, doc in zip(texts, spans) for s in doc]
        probs = self.scores(pieces)
        out, k = [], 0
        for doc in spans:
            out.append(self.document_result(doc, probs[k:k + len(doc)]))
            k += len(doc)
        return out

    def document_result(self, spans, probs: np.ndarray) -> TagResult:
        if len(spans) == 0:
            result = self.results(np.zeros((1, self.model.head.coef.shape[0])))[0]
            result.passages, result.evidence = [], {}
            return result
        result = self.results(probs.max(axis=0, keepdims=True))[0]
        present = self.model.present(probs, self.profile)
        result.passages = [{"start": s.start, "end": s.end, **r.to_dict()}
                           for s, r in zip(spans, self.results(probs))]
        result.evidence = {}
        for j, label in enumerate(self.labels):
            if label in result.labels:
                hits = [i for i in np.argsort(-probs[:, j], kind="stable") if present[i, j]]
                result.evidence[label] = [Evidence(spans[i].start, spans[i].end,
                                                   round(float(probs[i, j]), 4)) for i in hits]
        return result


def load(version: str | None = None, models_dir: str | Path | None = None,
         threshold_profile: str | None = None, device: str | None = None,
         precision: str | None = None, encoder: Encoder | None = None,
         settings: Settings | None = None) -> Classifier:
    """The shipped (or given) model version with its encoder, ready to tag.

    version: a model version (default: models/LATEST); models_dir: default ./models when the
    working directory has one, else the model shipped in the package; threshold_profile:
    "f1" (default) or "recall"; device: "cpu" (default) or e.g. "cuda"; precision: "auto",
    "fp32" or "bf16" (default: the one the model was trained at, where the CPU has it)."""
    settings = settings or load_settings(models_dir=models_dir, device=device)
    model = load_model(settings.models_dir, version)
    if encoder is None:
        encoder = encoder_for_model(model, settings, precision=precision)
    return Classifier(model, encoder, profile=threshold_profile)


__all__ = ["ArtifactError", "Classifier", "load"]
