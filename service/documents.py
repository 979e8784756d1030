"""From passage scores to a document's labels, and from a flagged passage to the sentences
that carry each label. Pure functions over spans and probability arrays: the classifier
(in-process) and the HTTP service (through its micro-batcher) share them.

The document rule. A document of n passages scores, per label,

    logit(document score) = logit(max over passages) - DOCUMENT_SLOPE * ln(n)

and takes the label when that score clears the label's ordinary threshold. The max alone
gives every extra passage another chance of a false label (n negatives clear a threshold
about n times as often as one); the negatives' scores have an upper tail that falls off
roughly exponentially in log-odds, so lowering the max by a multiple of ln(n) holds the
false-label rate of all-negative documents about flat in n. A single passage (n = 1) is
scored exactly as a passage. Passages a cascade stage stopped (prefiltered) are not counted:
their capped scores can never clear a threshold. bench/document_length.py measures the rule
on documents assembled from labels/test and prints the slope that holds the rate flat for
the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .result import Evidence, TagResult
from .splitter import Span, sentences

# log-odds subtracted per unit of ln(passages); measured by bench/document_length.py on the
# shipped model (README, Documents)
DOCUMENT_SLOPE = 0.5
MAX_EVIDENCE = 3  # sentences per label
EVIDENCE_PASSAGES = 3  # flagged passages per label whose sentences are scored


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def document_scores(probs: np.ndarray, slope: float = DOCUMENT_SLOPE,
                    screened: np.ndarray | None = None) -> np.ndarray:
    """Per-label document scores from an (n passages x labels) array; length-corrected max.
    screened: per passage, whether a cascade stage stopped it. Its scores are capped under
    every threshold, so it gives no extra chance of a false label and is not counted in n."""
    if probs.shape[0] == 0:
        return np.zeros(probs.shape[1])
    n = probs.shape[0] if screened is None else int(np.sum(~np.asarray(screened, dtype=bool)))
    best = probs.max(axis=0)
    if n <= 1 or slope == 0:
        return best.astype(np.float64)
    return 1 / (1 + np.exp(-(_logit(best) - slope * np.log(n))))


@dataclass(frozen=True)
class SentenceJob:
    """A sentence to score for evidence: its span and the passage it lies in."""

    span: Span
    passage: int


def evidence_jobs(text: str, spans: list[Span], probs: np.ndarray, labels: list[int],
                  thresholds: np.ndarray) -> list[SentenceJob]:
    """The sentences worth scoring for the given label columns: those of the best passages
    for each label (the best one always, others only where they clear the threshold).
    A passage of one sentence needs no second encoding: its score is the sentence's."""
    chosen: set[int] = set()
    for j in labels:
        order = np.argsort(-probs[:, j], kind="stable")[:EVIDENCE_PASSAGES]
        chosen.update(int(i) for k, i in enumerate(order)
                      if k == 0 or probs[i, j] >= thresholds[j])
    jobs = []
    for i in sorted(chosen):
        parts = sentences(text, spans[i])
        if len(parts) > 1:
            jobs.extend(SentenceJob(s, i) for s in parts)
    return jobs


def attach_evidence(result: TagResult, label_names: list[str], labels: list[int],
                    spans: list[Span], probs: np.ndarray, jobs: list[SentenceJob],
                    sentence_probs: np.ndarray, thresholds: np.ndarray) -> TagResult:
    """Set result.evidence: per label, the one to three sentences that carry it, best first.
    The best sentence always counts; the next ones only where they clear the threshold."""
    by_passage: dict[int, list[tuple[Span, np.ndarray]]] = {}
    for job, row in zip(jobs, sentence_probs):
        by_passage.setdefault(job.passage, []).append((job.span, row))
    result.evidence = {}
    for j in labels:
        order = np.argsort(-probs[:, j], kind="stable")[:EVIDENCE_PASSAGES]
        candidates: list[tuple[float, Span]] = []
        for k, i in enumerate(order):
            if k > 0 and probs[i, j] < thresholds[j]:
                continue
            scored = by_passage.get(int(i)) or [(spans[i], probs[i])]
            candidates.extend((float(row[j]), span) for span, row in scored)
        candidates.sort(key=lambda c: (-c[0], c[1].start))
        picked = [c for k, c in enumerate(candidates[:MAX_EVIDENCE])
                  if k == 0 or c[0] >= thresholds[j]]
        picked.sort(key=lambda c: -c[0])
        result.evidence[label_names[j]] = [Evidence(s.start, s.end, round(score, 4))
                                           for score, s in picked]
    return result
