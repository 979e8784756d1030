"""The real encoder's early exit: running layers 1-k, stopping some texts and finishing the
others must give the same embeddings as the whole encoder."""

import numpy as np
import pytest

from tropes.classifier import load
from tropes.training.labelset import read_labels

from .conftest import REPO

pytestmark = pytest.mark.encoder


def test_the_exit_path_gives_the_whole_encoders_embeddings():
    classifier = load(models_dir=REPO / "models")
    encoder = classifier.encoder
    texts = [p.text for p in read_labels(REPO / "labels").split("test")][:48]
    whole = encoder.encode(texts)
    features, kept, vectors = encoder.encode_with_exit(
        texts, 2, lambda rows, f: np.ones(len(rows), dtype=bool))
    assert kept.all() and (np.sum(whole * vectors, axis=1) > 0.9999).all()
    every_third = np.arange(len(texts)) % 3 == 0
    again, kept, vectors = encoder.encode_with_exit(texts, 2, lambda rows, f: every_third[rows])
    assert kept.tolist() == every_third.tolist()
    assert (np.sum(whole[kept] * vectors, axis=1) > 0.9999).all()
    assert np.allclose(features, again) and np.allclose(features,
                                                        encoder.layer_features(texts, 2))
