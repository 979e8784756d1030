"""The predictor: an artifact plus an encoder, tagging passages and long documents.
Plain Python shared by the CLI, the service and the tests."""

from __future__ import annotations

import numpy as np

from .artifact import ArtifactError, Model
from .embeddings import Encoder
from .features import build_features
from .splitter import split_passages

PORTRAYAL_BY_GROUPS = {(False, False): "none", (True, False): "misaligned",
                       (False, True): "aligned", (True, True): "mixed"}
WINDOW_MARGIN = 16  # special tokens plus slack between our count and the encoder's


class Predictor:
    def __init__(self, model: Model, encoder: Encoder, profile: str | None = None):
        expected = model.head.coef.shape[1] - len(model.prototypes)
        if expected != encoder.dim:
            raise ArtifactError(f"model {model.version} expects {expected}-dim embeddings, "
                                f"encoder {encoder.key} gives {encoder.dim}")
        self.model = model
        self.encoder = encoder
        self.labels = list(model.labels)
        self.thresholds = model.threshold_vector(profile)
        self.misaligned = np.array([g == "misaligned" for g in model.groups])
        self.window = max(encoder.max_tokens - WINDOW_MARGIN, 16)

    @property
    def version(self) -> str:
        return self.model.version

    def probabilities(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)))
        features = build_features(self.encoder.encode(texts), self.model.prototypes)
        return self.model.head.predict_proba(features)

    def results(self, probs: np.ndarray) -> list[dict]:
        present = probs >= self.thresholds
        mis = (present & self.misaligned).any(axis=1)
        ali = (present & ~self.misaligned).any(axis=1)
        rounded = np.round(probs.astype(np.float64), 4).tolist()
        out = []
        for row, flags, m, a in zip(rounded, present.tolist(), mis.tolist(), ali.tolist()):
            out.append({
                "labels": [lb for lb, f in zip(self.labels, flags) if f],
                "scores": dict(zip(self.labels, row)),
                "portrayal": PORTRAYAL_BY_GROUPS[(m, a)],
            })
        return out

    def tag(self, texts: list[str]) -> list[dict]:
        return self.results(self.probabilities(texts))

    def split(self, text: str):
        return split_passages(text, self.window, self.encoder.count_tokens)

    def tag_documents(self, texts: list[str]) -> list[dict]:
        """Each document: split, tag every passage (one encoder call for all), max-pool."""
        spans = [self.split(t) for t in texts]
        pieces = [t[s.start:s.end] for t, doc in zip(texts, spans) for s in doc]
        probs = self.probabilities(pieces)
        out, k = [], 0
        for doc in spans:
            doc_probs = probs[k:k + len(doc)]
            k += len(doc)
            out.append(self.document_result(doc, doc_probs))
        return out

    def document_result(self, spans, probs: np.ndarray) -> dict:
        if len(spans) == 0:
            result = self.results(np.zeros((1, len(self.labels))))[0]
            return {**result, "passages": [], "evidence": {}}
        result = self.results(probs.max(axis=0, keepdims=True))[0]
        per_passage = self.results(probs)
        passages = [{"start": s.start, "end": s.end, **r} for s, r in zip(spans, per_passage)]
        evidence = {}
        for j, label in enumerate(self.labels):
            if label in result["labels"]:
                hits = [i for i in np.argsort(-probs[:, j], kind="stable")
                        if probs[i, j] >= self.thresholds[j]]
                evidence[label] = [{"start": spans[i].start, "end": spans[i].end,
                                    "score": round(float(probs[i, j]), 4)} for i in hits]
        return {**result, "passages": passages, "evidence": evidence}
