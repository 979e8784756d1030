"""The classifier: one object that owns the encoder, the head, the labels and thresholds,
with one load entry (`tropes.load`). Plain Python shared by the CLI, the service, bulk
scoring, Ray actors, benchmarks and tests.

The cascade. A model that carries a prefilter (tropes.training.prefilter) screens every
passage first; a passage it rejects never reaches the encoder and gets the same result shape:
no labels, portrayal "none", `extra["prefiltered"] = True`, and every score (labels and
groups) from the cheap stage: min(p, just under that label's or group's threshold), where p
is the prefilter's probability that any label applies, calibrated on labels/train (whose
mix is about half positive, so on ordinary text it overstates the chance; it is an upper
estimate, never a head score). A model that also carries an early exit
(tropes.training.early_exit) runs the passages the prefilter passes through the encoder's
first layers, and stops there those its second cheap stage rejects: same result shape, same
marker, scores min(p, just under the threshold) from that stage. `prefilter=False`
(Settings.prefilter, TROPES_PREFILTER=0, `tropes --no-prefilter`) turns both stages off and
sends every passage through the whole encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .documents import SentenceJob, attach_evidence, document_scores, evidence_jobs
from .result import TagResult
from .splitter import Span, split_passages
from .training.artifact import ArtifactError, Model, load_model
from .training.embeddings import Encoder, check_encoder_matches, encoder_for_model
from .training.features import build_features
from .training.settings import Settings, load_settings
from .training.taxonomy import portrayal_of

WINDOW_MARGIN = 16  # special tokens plus slack between our count and the encoder's
SCORE_DECIMALS = 4  # results are rounded to this; a capped score stays under after rounding


def _just_under(thresholds: np.ndarray) -> np.ndarray:
    """The largest 4-decimal value below each threshold (0 for a threshold of 0)."""
    step = 10.0 ** -SCORE_DECIMALS
    return np.maximum(np.ceil(np.asarray(thresholds, dtype=np.float64) / step - 1) * step, 0.0)


class Classifier:
    def __init__(self, model: Model, encoder: Encoder, profile: str | None = None,
                 prefilter: bool = True):
        check_encoder_matches(model, encoder)
        self.model = model
        self.encoder = encoder
        self.labels = list(model.labels)
        self.groups = list(model.groups)
        self.profile = profile
        self.thresholds = model.threshold_vector(profile)
        self.misaligned = np.array([g == "misaligned" for g in model.groups])
        self.window = max(encoder.max_tokens - WINDOW_MARGIN, 16)
        self.prefilter = model.prefilter if prefilter else None
        self.early_exit = model.early_exit if prefilter and hasattr(
            encoder, "encode_with_exit") else None
        if self.prefilter is not None and self.prefilter.uses_tokens:
            vocab = getattr(encoder, "vocab_size", None)
            if vocab != len(self.prefilter.token_weights):
                raise ArtifactError(f"model {model.version}: its prefilter reads "
                                    f"{len(self.prefilter.token_weights)} word pieces but the "
                                    f"encoder has {vocab}")
        # cheap-stage scores stay under every label's and group's threshold
        self.cheap_caps = _just_under(np.concatenate(
            [self.thresholds, model.group_threshold_vector(profile)]))

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def has_group_scores(self) -> bool:
        """Whether results carry the misaligned/aligned group scores."""
        return bool(self.model.group_ids)

    @property
    def n_scores(self) -> int:
        return self.model.head.coef.shape[0]

    def head_scores(self, texts: list[str]) -> np.ndarray:
        """The head's calibrated scores for every text (all through the encoder): one column
        per label, then one per group. The service's batcher calls this."""
        if not texts:
            return np.zeros((0, self.n_scores))
        features = build_features(self.encoder.encode(texts), self.model.prototypes)
        return self.model.head.predict_proba(features)

    def exit_scores(self, texts: list[str], may_exit: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, exited): the head's scores, except for the texts the early exit stops
        (scores from it, under every threshold). may_exit: which texts may stop there
        (default all; evidence sentences may not). The service's batcher calls this."""
        n = len(texts)
        if self.early_exit is None or not texts or (may_exit is not None
                                                    and not np.any(may_exit)):
            return self.head_scores(texts), np.zeros(n, dtype=bool)
        may = np.ones(n, dtype=bool) if may_exit is None else np.asarray(may_exit, dtype=bool)
        stage = self.early_exit
        features, kept, vectors = self.encoder.encode_with_exit(
            texts, stage.layer, lambda rows, f: ~may[rows] | stage.keeps(f))
        out = np.zeros((n, self.n_scores))
        if kept.any():
            out[kept] = self.model.head.predict_proba(
                build_features(vectors, self.model.prototypes))
        if not kept.all():
            p = stage.probability(features[~kept])
            out[~kept] = np.minimum(p[:, None], self.cheap_caps[None, :])
        return out, ~kept

    def screen(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """The cascade's first stage: (passed, cheap scores). passed[i] says whether text i
        goes on to the encoder; the cheap scores (None without a prefilter) stand in for the
        head's where it does not."""
        if self.prefilter is None or not texts:
            return np.ones(len(texts), dtype=bool), None
        ids = self.encoder.token_ids(texts) if self.prefilter.uses_tokens else None
        p = self.prefilter.probability(texts, ids)
        cheap = np.minimum(p[:, None], self.cheap_caps[None, :])
        return p >= self.prefilter.threshold, cheap

    def merge(self, passed: np.ndarray, cheap: np.ndarray | None,
              encoded: np.ndarray) -> np.ndarray:
        """Scores for every text: the head's for those that passed (encoded, in order),
        the cheap stage's for the others."""
        if cheap is None or passed.all():
            return encoded
        out = cheap.astype(np.float64)
        out[passed] = encoded
        return out

    def cascade_scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(scores, prefiltered): the encoder sees only the texts the prefilter passes, and
        only those the early exit passes go through all its layers."""
        passed, cheap = self.screen(texts)
        encoded, exited = self.exit_scores([t for t, ok in zip(texts, passed) if ok])
        return self.merge(passed, cheap, encoded), self.rejected(passed, exited)

    @staticmethod
    def rejected(passed: np.ndarray, exited: np.ndarray) -> np.ndarray:
        """Per text, whether a cheap stage stopped it: the prefilter, or the early exit
        (exited: one flag per passed text, in order)."""
        out = ~np.asarray(passed, dtype=bool)
        out[np.flatnonzero(~out)] = np.asarray(exited, dtype=bool)
        return out

    def scores(self, texts: list[str]) -> np.ndarray:
        """Calibrated scores, one column per label, then one per group: the head's, or the
        cheap stage's for texts the prefilter rejects (see the module's docstring)."""
        return self.cascade_scores(texts)[0]

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Per-label probabilities, one row per text, one column per label."""
        return self.scores(texts)[:, :len(self.labels)]

    def results(self, scores: np.ndarray, prefiltered: np.ndarray | None = None
                ) -> list[TagResult]:
        """prefiltered: rows the cascade's first stage rejected: never labelled."""
        present = self.model.present(scores, self.profile)
        if prefiltered is not None:
            present &= ~np.asarray(prefiltered, dtype=bool)[:, None]
        mis = (present & self.misaligned).any(axis=1)
        ali = (present & ~self.misaligned).any(axis=1)
        rounded = np.round(scores.astype(np.float64), SCORE_DECIMALS).tolist()
        n = len(self.labels)
        group_ids = self.model.group_ids
        out = [TagResult(labels=[lb for lb, f in zip(self.labels, flags) if f],
                         scores=dict(zip(self.labels, row[:n])), portrayal=portrayal_of(m, a),
                         group_scores=dict(zip(group_ids, row[n:])) if group_ids else None)
               for row, flags, m, a in zip(rounded, present.tolist(), mis.tolist(),
                                           ali.tolist())]
        if prefiltered is not None:
            for result, flag in zip(out, np.asarray(prefiltered).tolist()):
                if flag:
                    result.extra["prefiltered"] = True
        return out

    def tag(self, texts: list[str], evidence: bool = False) -> list[TagResult]:
        """Tag passages: labels, probabilities and the portrayal of each. A text longer than
        the encoder's window is split and pooled like a document (never cut short); its
        result says how many passages it was read as (`passages_pooled`)."""
        return self._tag_spans(texts, [self.passages_of(t) for t in texts],
                               self.pooled_result, evidence)

    def _tag_spans(self, texts, plans, result_of, evidence: bool) -> list[TagResult]:
        """One encoder call for every span of every text that the prefilter passes, then
        one result per text."""
        probs, rejected = self.cascade_scores([t[s.start:s.end] for t, p in zip(texts, plans)
                                               for s in p])
        results, k = [], 0
        for text, spans in zip(texts, plans):
            part = probs[k:k + len(spans)]
            result = result_of(spans, part, rejected[k:k + len(spans)])
            k += len(spans)
            if evidence:
                self.add_evidence(result, text, spans, part)
            results.append(result)
        return results

    def fits(self, text: str) -> bool:
        """Whether the encoder reads the whole text in one window."""
        return len(text) <= self.window or self.encoder.count_tokens(text) <= self.window

    def passages_of(self, text: str) -> list[Span]:
        """A passage to tag: itself when it fits the window, else split like a document."""
        if self.fits(text):
            return [Span(0, len(text))]
        return self.split(text) or [Span(0, len(text))]

    def split(self, text: str) -> list[Span]:
        return split_passages(text, self.window, self.encoder.count_tokens)

    def tag_documents(self, texts: list[str], evidence: bool = True) -> list[TagResult]:
        """Each document: split, tag every passage (one encoder call for all), aggregate,
        then score the sentences of flagged passages for evidence (one more call)."""
        return self._tag_spans(texts, [self.split(t) for t in texts], self.document_result,
                               evidence)

    def pooled_result(self, spans: list[Span], probs: np.ndarray,
                      prefiltered: np.ndarray | None = None) -> TagResult:
        """One passage's result, or for a text read as several passages, the document
        rule's labels and scores (without the passage list). prefiltered: per passage,
        whether the cascade's first stage rejected it; the pooled result is prefiltered
        when every passage was."""
        if len(spans) == 1:
            return self.results(probs, prefiltered)[0]
        result = self.results(document_scores(probs, screened=prefiltered)[None, :],
                              _all(prefiltered))[0]
        result.extra["passages_pooled"] = len(spans)
        return result

    def document_result(self, spans: list[Span], probs: np.ndarray,
                        prefiltered: np.ndarray | None = None) -> TagResult:
        """Document labels by the length-corrected max (tropes.documents), with every
        passage's own result (prefiltered ones marked); evidence is added by add_evidence."""
        if len(spans) == 0:
            result = self.results(np.zeros((1, self.n_scores)))[0]
            result.passages, result.evidence = [], {}
            return result
        result = self.results(document_scores(probs, screened=prefiltered)[None, :],
                              _all(prefiltered))[0]
        result.passages = [{"start": s.start, "end": s.end, **r.to_dict()}
                           for s, r in zip(spans, self.results(probs, prefiltered))]
        result.evidence = {}
        return result

    def evidence_jobs(self, text: str, spans: list[Span], probs: np.ndarray,
                      result: TagResult) -> list[SentenceJob]:
        """The sentences to score so that each label of result gets its evidence."""
        return evidence_jobs(text, spans, probs, self.label_columns(result), self.thresholds)

    def attach_evidence(self, result: TagResult, spans: list[Span], probs: np.ndarray,
                        jobs: list[SentenceJob], sentence_probs: np.ndarray) -> TagResult:
        return attach_evidence(result, self.labels, self.label_columns(result), spans, probs,
                               jobs, sentence_probs, self.thresholds)

    def add_evidence(self, result: TagResult, text: str, spans: list[Span],
                     probs: np.ndarray) -> TagResult:
        """Evidence sentences for every label of result, scored here (in-process)."""
        jobs = self.evidence_jobs(text, spans, probs, result)
        # evidence is for labels the head gave: its sentences are scored by the head too
        sentence_probs = self.head_scores([text[j.span.start:j.span.end] for j in jobs])
        return self.attach_evidence(result, spans, probs, jobs, sentence_probs)

    def label_columns(self, result: TagResult) -> list[int]:
        return [self.labels.index(label) for label in result.labels]


def _all(prefiltered: np.ndarray | None) -> np.ndarray | None:
    """One row's flag for a pooled result: prefiltered when every passage was."""
    return None if prefiltered is None else np.array([bool(np.all(prefiltered))])


def load(version: str | None = None, models_dir: str | Path | None = None,
         threshold_profile: str | None = None, device: str | None = None,
         precision: str | None = None, encoder: Encoder | None = None,
         settings: Settings | None = None, prefilter: bool | None = None) -> Classifier:
    """The shipped (or given) model version with its encoder, ready to tag.

    version: a model version (default: models/LATEST); models_dir: default ./models when the
    working directory has one, else the model shipped in the package; threshold_profile:
    "f1" (default) or "recall"; device: "cpu" (default) or e.g. "cuda"; precision: "auto",
    "fp32" or "bf16" (default: the one the model was trained at, where the CPU has it);
    prefilter: use the model's cascade prefilter when it has one (default: the settings',
    on unless TROPES_PREFILTER=0)."""
    settings = settings or load_settings(models_dir=models_dir, device=device)
    model = load_model(settings.models_dir, version)
    if encoder is None:
        encoder = encoder_for_model(model, settings, precision=precision)
    return Classifier(model, encoder, profile=threshold_profile,
                      prefilter=settings.prefilter if prefilter is None else prefilter)


__all__ = ["ArtifactError", "Classifier", "load"]
