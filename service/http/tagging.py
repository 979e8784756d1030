"""The service's tagging flows over the micro-batcher: texts that fit the encoder's window
are one passage; longer ones are split and pooled like documents (never cut short), and
evidence sentences are scored in a second batched call. The same rules as the in-process
Classifier.tag / tag_documents (tropes.documents), so every entry point answers alike.
The cascade's first stage screens the passages here, before the batcher: only those it
passes are queued (and counted for admission) for the encoder; the batcher runs them through
the early exit (Classifier.exit_scores), evidence sentences through the whole encoder."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from ..classifier import Classifier
from ..result import TagResult
from ..splitter import Span
from .batching import MicroBatcher, Overloaded
from .errors import ApiError
from .holder import ModelHolder


def overloaded(exc: Overloaded) -> ApiError:
    return ApiError(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


async def submit(batcher: MicroBatcher, texts: list[str], follow_up: bool = False):
    try:
        return await batcher.submit(texts, follow_up=follow_up)
    except Overloaded as exc:
        raise overloaded(exc) from None


def is_small(texts: list[str]) -> bool:
    """Work cheap enough to do on the event loop: a thread hop for it would wait in the
    shared thread pool behind the splitting and screening of large requests."""
    return len(texts) <= 4 and sum(len(t) for t in texts) <= 8_000


CHORE_TEXTS = 8  # texts per piece of a large request's splitting or screening


async def in_chores(batcher: MicroBatcher, small: bool, fn, items: list,
                    since: float | None = None) -> list:
    """fn over items, a list of per-item results. Small work runs inline; large work on the
    encoder's own thread in pieces of CHORE_TEXTS, between encoder calls: on a small CPU a
    second thread splitting or screening beside the encoder's threads slowed every encoder
    call many times over (measured: one passage 0.6 s instead of 30 ms), and one long piece
    would hold the /tag requests that arrive meanwhile."""
    if small:
        return fn(items)
    out = []
    for start in range(0, len(items), CHORE_TEXTS):
        out.extend(await batcher.run_on_encoder_thread(fn, items[start:start + CHORE_TEXTS],
                                                       since=since))
    return out


async def tag_texts(holder: ModelHolder, batcher: MicroBatcher, texts: list[str],
                    documents: bool = False, evidence: bool = False
                    ) -> tuple[Classifier, list[TagResult]]:
    """Results for texts (passages, or documents with their passage lists), one encoder
    call for all their passages and one more for the evidence sentences."""
    since = time.monotonic()  # the request's age orders its pieces of work
    small = is_small(texts)
    if not small:
        try:
            batcher.refuse_early()
        except Overloaded as exc:
            raise overloaded(exc) from None
    splitter = holder.classifier  # splitting depends on the encoder only, not the version
    split = splitter.split if documents else splitter.passages_of
    plans: list[list[Span]] = await in_chores(batcher, small,
                                              lambda chunk: [split(t) for t in chunk], texts,
                                              since)
    pieces = [t[s.start:s.end] for t, spans in zip(texts, plans) for s in spans]
    classifier, probs, rejected = await cascade(holder, batcher, pieces, small, since)
    parts, k = [], 0
    build = classifier.document_result if documents else classifier.pooled_result
    results = []
    for spans in plans:
        part = probs[k:k + len(spans)]
        parts.append(part)
        results.append(build(spans, part, rejected[k:k + len(spans)]))
        k += len(spans)
    if evidence:
        await add_evidence(classifier, batcher, texts, plans, parts, results)
    return classifier, results


def screen_rows(screener: Classifier, chunk: list[str]):
    """(passed, cheap rows or Nones) of a chunk: per-item, so chunks can be joined."""
    passed, cheap = screener.screen(chunk)
    return passed.tolist(), (list(cheap) if cheap is not None else [None] * len(chunk))


async def cascade(holder: ModelHolder, batcher: MicroBatcher, pieces: list[str],
                  small: bool = False, since: float | None = None
                  ) -> tuple[Classifier, np.ndarray, np.ndarray]:
    """(classifier, scores, prefiltered): the prefilter screens the pieces and only those it
    passes go through the batcher to the encoder."""
    screener = holder.classifier
    screened = await in_chores(batcher, small, lambda chunk: list(zip(*screen_rows(
        screener, chunk))), pieces, since)
    passed = np.array([ok for ok, _ in screened], dtype=bool)
    cheap = None if not screened or screened[0][1] is None else np.stack(
        [row for _, row in screened])
    chosen = [p for p, ok in zip(pieces, passed) if ok]
    if not chosen:
        return screener, screener.merge(passed, cheap, screener.head_scores([])), ~passed
    classifier, encoded, exited = await submit(batcher, chosen)
    if classifier.version != screener.version:  # swapped in between: its own cascade
        probs, rejected = await asyncio.to_thread(classifier.cascade_scores, pieces)
        return classifier, probs, rejected
    return classifier, classifier.merge(passed, cheap, encoded), classifier.rejected(
        passed, exited)


async def add_evidence(classifier: Classifier, batcher: MicroBatcher, texts: list[str],
                       plans: list[list[Span]], parts: list[np.ndarray],
                       results: list[TagResult]) -> None:
    jobs = [classifier.evidence_jobs(t, spans, part, r)
            for t, spans, part, r in zip(texts, plans, parts, results)]
    sentences = [t[j.span.start:j.span.end] for t, doc in zip(texts, jobs) for j in doc]
    sentence_probs = classifier.head_scores([])
    if sentences:  # evidence is for the head's labels: sentences skip the prefilter
        used, sentence_probs, _ = await submit(batcher, sentences, follow_up=True)
        if used.version != classifier.version:  # the model was swapped in between
            sentence_probs = await asyncio.to_thread(classifier.head_scores, sentences)
    k = 0
    for spans, part, doc_jobs, result in zip(plans, parts, jobs, results):
        classifier.attach_evidence(result, spans, part, doc_jobs,
                                   sentence_probs[k:k + len(doc_jobs)])
        k += len(doc_jobs)
