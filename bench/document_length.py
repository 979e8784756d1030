"""Do document labels grow with length? Documents are assembled from labels/test: k passages
with no label (k = 0..20), with or without one positive passage. For each k it prints

- the false-label rate of all-negative documents of k+1 passages (per label, averaged over
  labels, and "any label"), under the plain max over passages and under the shipped rule
  (tropes.documents: the max lowered by DOCUMENT_SLOPE * ln(passages) in log-odds);
- what the passage false-positive rate explains for the plain max if passages were
  independent, 1 - (1 - f)^(k+1);
- the recall of the positive passage's labels among k negatives, under both rules.

It also prints the slope that would hold the per-label false-label rate at k = 20 to the
single-passage rate for this model, and the extra cost of sentence evidence in
Classifier.tag_documents (documents of one positive and five negative passages).
Runs on whatever models/LATEST is:  .venv/bin/python bench/document_length.py"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tropes.classifier import load
from tropes.documents import DOCUMENT_SLOPE, document_scores
from tropes.training.artifact import load_model
from tropes.training.embeddings import EmbeddingCache, embed_with_cache, text_key
from tropes.training.features import build_features
from tropes.training.labelset import read_labels
from tropes.training.settings import load_settings

KS = list(range(0, 21))


def rule_scores(best: np.ndarray, n: int, slope: float) -> np.ndarray:
    """document_scores for many documents at once, from their per-label max."""
    return document_scores(best[None, ...], slope) if n == 1 else \
        1 / (1 + np.exp(-(np.log(np.clip(best, 1e-7, 1 - 1e-7) / np.clip(1 - best, 1e-7, 1))
                         - slope * np.log(n))))


def false_label_rates(neg: np.ndarray, present, n: int, slope: float,
                      trials: int, rng) -> tuple[float, float]:
    """(mean per-label rate, any-label rate) over `trials` all-negative documents."""
    idx = np.stack([rng.choice(len(neg), size=n, replace=n > len(neg)) for _ in range(trials)])
    flags = present(rule_scores(neg[idx].max(axis=1), n, slope))
    return float(flags.mean()), float(flags.any(axis=1).mean())


def recall(pos: list[tuple[int, np.ndarray]], neg: np.ndarray, present,
           k: int, slope: float, rng) -> float:
    """Share of (positive passage, label) pairs found in a document with k negatives."""
    labels = np.array([label for label, _ in pos])
    best = np.stack([row for _, row in pos])
    if k:
        idx = np.stack([rng.choice(len(neg), size=k, replace=False) for _ in pos])
        best = np.maximum(best, neg[idx].max(axis=1))
    flags = present(rule_scores(best, k + 1, slope))
    return float(flags[np.arange(len(labels)), labels].mean())


def fitted_slope(neg, present, trials, rng) -> float:
    """Smallest slope (step 0.05) at which 21-passage documents get false labels no more
    often, per label, than single passages do."""
    base = float(present(neg).mean())
    for slope in np.arange(0, 4.01, 0.05):
        rate, _ = false_label_rates(neg, present, 21, float(slope), trials, rng)
        if rate <= base:
            return round(float(slope), 2)
    return float("nan")


def evidence_cost(classifier, texts, neg_idx, pos_idx, docs: int,
                  rng) -> tuple[float, float, float]:
    """(seconds without evidence, with evidence, share of documents whose best evidence
    sentence for a found label lies in the positive passage)."""
    built, positive_spans = [], []
    for d in range(docs):
        parts = [texts[i] for i in rng.choice(neg_idx, size=5, replace=False)]
        at = int(rng.integers(0, 6))
        parts.insert(at, texts[pos_idx[d % len(pos_idx)]])
        start = sum(len(p) + 2 for p in parts[:at])
        built.append("\n\n".join(parts))
        positive_spans.append((start, start + len(parts[at])))
    classifier.tag_documents(built[:2])  # warm-up
    t0 = time.perf_counter()
    classifier.tag_documents(built, evidence=False)
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = classifier.tag_documents(built, evidence=True)
    with_evidence = time.perf_counter() - t0
    inside = found = 0
    for result, (a, b) in zip(results, positive_spans):
        for hits in result.evidence.values():
            found += 1
            inside += a <= hits[0].start and hits[0].end <= b
    return plain, with_evidence, inside / max(found, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--evidence-docs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-cache", action="store_true",
                        help="test passages' vectors from .cache/ only, no encoder (no "
                             "evidence cost)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                        help="encoder precision (default: the model's)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    settings = load_settings()
    test = read_labels(settings.labels_dir).split("test")
    texts = [p.text for p in test]
    if args.from_cache:
        classifier = None
        model = load_model(settings.models_dir)
        precision = args.precision or (model.meta.get("encoder") or {}).get("precision", "fp32")
        key = f"minilm-l6-v2-{model.meta['encoder']['weights_sha256'][:12]}-{precision}"
        cache = EmbeddingCache(settings.cache_dir, key)
        missing = sum(text_key(t) not in cache.vectors for t in texts)
        if missing:
            raise SystemExit(f"{missing} test passages are not in {cache.path}; run without "
                             "--from-cache")
        vectors = np.stack([cache.vectors[text_key(t)] for t in texts])
    else:
        classifier = load(settings=settings, precision=args.precision)
        model = classifier.model
        # the embedding cache (.cache/, as tropes eval uses it) makes a rerun cheap
        vectors, _ = embed_with_cache(classifier.encoder, texts, settings.cache_dir,
                                      progress=True)
    print(f"model {model.version}; {len(test)} test passages", flush=True)
    probs = model.head.predict_proba(build_features(vectors, model.prototypes))

    def present(scores):  # the model's own decision rule (thresholds, and group gates)
        return model.present(scores)

    label_ids = list(model.labels)
    neg_idx = [i for i, p in enumerate(test) if not p.labels]
    pos_idx = [i for i, p in enumerate(test) if p.labels]
    neg = probs[neg_idx]
    pos = [(label_ids.index(label), probs[i]) for i in pos_idx
           for label in test[i].labels if label in label_ids]
    f_label = float(present(neg).mean())
    f_any = float(present(neg).any(axis=1).mean())
    print(f"{len(neg_idx)} negative passages (no label), {len(pos)} (positive passage, label) "
          f"pairs; passage false-positive rate {f_label:.4f} per label, {f_any:.4f} any label")
    print(f"shipped rule: slope {DOCUMENT_SLOPE} (log-odds per ln(passages))\n")
    print("| k | false-label rate, max: per label / any | explained by passage FPR: per label"
          " / any | rule: per label / any | recall, max | recall, rule |")
    print("|---|---|---|---|---|---|")
    for k in KS:
        n = k + 1
        plain = false_label_rates(neg, present, n, 0.0, args.trials, rng)
        ruled = false_label_rates(neg, present, n, DOCUMENT_SLOPE, args.trials, rng)
        explained = (1 - (1 - f_label) ** n, 1 - (1 - f_any) ** n)
        print(f"| {k} | {plain[0]:.3f} / {plain[1]:.3f} | {explained[0]:.3f} / "
              f"{explained[1]:.3f} | {ruled[0]:.3f} / {ruled[1]:.3f} | "
              f"{recall(pos, neg, present, k, 0.0, rng):.3f} | "
              f"{recall(pos, neg, present, k, DOCUMENT_SLOPE, rng):.3f} |", flush=True)
    slope = fitted_slope(neg, present, args.trials // 2, rng)
    print(f"\nslope that holds the per-label rate at k=20 to the passage rate: {slope}")
    if classifier is None:
        print("\nevidence cost: not measured with --from-cache (it needs the encoder)")
        return
    plain_s, evidence_s, inside = evidence_cost(classifier, texts, neg_idx, pos_idx,
                                                args.evidence_docs, rng)
    print(f"\nevidence cost, {args.evidence_docs} documents of 6 passages: tag_documents "
          f"{plain_s:.2f} s without evidence, {evidence_s:.2f} s with: "
          f"{evidence_s / plain_s:.2f}x; best evidence sentence inside the positive passage "
          f"for {inside:.1%} of document labels")


if __name__ == "__main__":
    main()
