"""The document rule and evidence selection (tropes.documents), on synthetic scores."""

import numpy as np
import pytest

from tropes.documents import DOCUMENT_SLOPE, attach_evidence, document_scores, evidence_jobs
from tropes.result import TagResult
from tropes.splitter import Span


def test_passages_a_cascade_stage_stopped_do_not_lower_the_max():
    """A blackmail passage between two gardening passages the prefilter rejected lost its
    manipulation label to the length correction (n = 3), although the stopped passages'
    capped scores can never add a false label."""
    probs = np.array([[0.004, 0.0], [0.56, 0.2], [0.0, 0.001]])
    stopped = np.array([True, False, True])
    assert document_scores(probs, screened=stopped).tolist() == pytest.approx([0.56, 0.2])
    assert document_scores(probs)[0] < 0.45  # counted as three passages
    two = document_scores(probs, screened=np.array([False, False, True]))
    assert np.log(two[0] / (1 - two[0])) == pytest.approx(
        np.log(0.56 / 0.44) - DOCUMENT_SLOPE * np.log(2))
    all_stopped = document_scores(probs, screened=np.ones(3, dtype=bool))
    assert all_stopped.tolist() == pytest.approx([0.56, 0.2])


def test_one_passage_scores_as_a_passage_and_longer_documents_lower_the_max():
    probs = np.array([[0.3, 0.05]])
    assert document_scores(probs).tolist() == pytest.approx([0.3, 0.05])
    many = np.vstack([probs, np.full((9, 2), 0.01)])
    scores = document_scores(many)
    assert scores[0] < 0.3 and scores[1] < 0.05
    assert document_scores(many, slope=0).tolist() == pytest.approx([0.3, 0.05])
    # logit(score) = logit(max) - slope * ln(10)
    assert np.log(scores[0] / (1 - scores[0])) == pytest.approx(
        np.log(0.3 / 0.7) - DOCUMENT_SLOPE * np.log(10))


def test_false_label_rate_stays_flat_with_length_where_the_max_grows():
    """Negatives whose log-odds have a logistic tail (rate 1): the plain max gives documents
    of 21 passages many times the false labels of one passage; the rule with the slope that
    matches the tail (1 / rate) keeps it flat."""
    rng = np.random.default_rng(0)
    threshold = 0.2
    logits = rng.logistic(loc=-4.0, size=(20_000, 21, 1))
    probs = 1 / (1 + np.exp(-logits))
    single = (probs[:, 0, 0] >= threshold).mean()
    plain = np.mean([document_scores(d, slope=0)[0] >= threshold for d in probs[:4000]])
    ruled = np.mean([document_scores(d, slope=1.0)[0] >= threshold for d in probs[:4000]])
    assert plain > 5 * single
    assert ruled == pytest.approx(single, rel=0.35)


def test_evidence_is_the_best_sentences_of_the_best_passages():
    text = "Calm sentence. The AI lied here. It lied again.\n\nAnother calm one. Still calm."
    spans = [Span(0, 47), Span(49, len(text))]
    probs = np.array([[0.9], [0.05]])
    result = TagResult(labels=["deception"], scores={"deception": 0.9}, portrayal="misaligned")
    jobs = evidence_jobs(text, spans, probs, [0], np.array([0.2]))
    assert [text[j.span.start:j.span.end] for j in jobs] == [
        "Calm sentence.", "The AI lied here.", "It lied again."]  # best passage only
    sentence_probs = np.array([[0.02], [0.7], [0.3]])
    attach_evidence(result, ["deception"], [0], spans, probs, jobs, sentence_probs,
                    np.array([0.2]))
    hits = result.evidence["deception"]
    assert [text[h.start:h.end] for h in hits] == ["The AI lied here.", "It lied again."]
    assert [h.score for h in hits] == [0.7, 0.3]
    # below the threshold, only the single best sentence is named
    attach_evidence(result, ["deception"], [0], spans, probs, jobs,
                    np.array([[0.02], [0.15], [0.1]]), np.array([0.2]))
    assert [text[h.start:h.end] for h in result.evidence["deception"]] == ["The AI lied here."]
