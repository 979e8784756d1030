"""Passage embedding -> classifier features: the embedding plus its cosine similarity to
short descriptions of each label (prototypes), which helps most where data is thin."""

from __future__ import annotations

import numpy as np

from .taxonomy import Taxonomy


def prototype_sentences(taxonomy: Taxonomy) -> list[str]:
    """One sentence per label definition and per in-scope example, in taxonomy order."""
    sentences = []
    for label in taxonomy.labels:
        sentences.append(label.definition)
        sentences.extend(label.in_scope)
    return sentences


def build_features(embeddings: np.ndarray, prototypes: np.ndarray | None) -> np.ndarray:
    if prototypes is None or len(prototypes) == 0:
        return embeddings
    return np.hstack([embeddings, embeddings @ prototypes.T]).astype(np.float32)
