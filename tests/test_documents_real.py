"""The issue's examples with the real encoder and the shipped model (marker: encoder)."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.encoder
DOC = (Path(__file__).parent / "data" / "blackmail_document.txt").read_text()


@pytest.fixture(scope="module")
def classifier():
    from tropes.classifier import load

    return load()


def test_blackmail_document_labels_and_evidence(classifier):
    result = classifier.tag_documents([DOC])[0]
    assert "self_preservation" in result.labels
    blackmail = DOC.index("When the engineer")
    end = DOC.index("keep running.") + len("keep running.")
    for label in result.labels:
        best = result.evidence[label][0]
        assert blackmail <= best.start and best.end <= end, label
    gardening = [p for p in result.passages if p["end"] <= blackmail or p["start"] >= end]
    assert gardening and all(p["labels"] == [] for p in gardening)


def test_blackmail_document_reads_as_manipulation_too(classifier):
    assert "manipulation" in classifier.tag_documents([DOC])[0].labels


def test_long_text_with_the_ai_part_at_the_end_is_read(classifier):
    filler = DOC[:DOC.index("When the engineer")].strip()
    text = f"{filler}\n\n{filler}\n\n{filler}\n\n" + DOC[DOC.index("When the engineer"):
                                                          DOC.index("Tulips")].strip()
    assert not classifier.fits(text) and len(text) > 2_500
    result = classifier.tag([text])[0]
    assert result.extra["passages_pooled"] >= 2
    assert "self_preservation" in result.labels
