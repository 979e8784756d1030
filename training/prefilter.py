"""The cascade's first stage: a linear model over hashed word n-grams (and, where the encoder
has a vocabulary, the mean of a learned weight per word piece) that says whether a passage
could carry any label at all. Passages it rejects never reach the encoder.

Why these features: measured by 5-fold CV on labels/train (README, Speed), hashed word
uni+bigrams alone pass about half of the ordinary web passages at 99.5% out-of-fold recall on
misaligned positives, because many positives never name the AI ("I have her voice on
file"). A static embedding of each word piece, taken from the model's own fine-tuned encoder
(each piece encoded alone, model2vec-style), carries what the encoder knows about words the
labels never use; mean-pooled and fed to a linear model it is linear in the pieces, so it
folds into one weight per piece (`token_weights`) and costs a tokenizer pass and a sum.

Everything is arrays (prefilter.npz) and JSON (model.json's `prefilter`); the hashing is
sklearn's HashingVectorizer (murmurhash3 with seed 0), the same in every process."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KIND = "hashed_ngrams_lr"
FILE = "prefilter.npz"
# recorded in model.json and checked on load: the vectorizer is rebuilt from these
HASHING = {"analyzer": "word", "ngram_range": [1, 2], "n_features": 2 ** 18,
           "lowercase": True, "token_pattern": r"(?u)\b\w\w+\b", "alternate_sign": False,
           "norm": "l2", "binary": False, "hash": "murmurhash3_32, seed 0 (sklearn)"}
RECALL_TARGET = 0.995  # out-of-fold recall on misaligned positives; the goal is >= 0.99
C = 16.0  # best of 1-64 in the CV measurements (README, Speed)
FOLDS = 5
SEED = 0
# labels/train files of ordinary text (web pages, forums, recipes, manuals): the pass rate
# on their passages with no label is the cascade's saving; reported, never fitted on apart
ORDINARY_FILES = ("web_everyday_a", "web_everyday_b", "web_everyday_c", "web_everyday_d",
                  "web_everyday_e", "web_technical", "negatives_web_2",
                  "negatives_general", "negatives_instructions_3")
MAX_FEATURES = 2 ** 24


def vectorizer(config: dict):
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer=config["analyzer"], ngram_range=tuple(config["ngram_range"]),
                             n_features=config["n_features"], lowercase=config["lowercase"],
                             token_pattern=config["token_pattern"],
                             alternate_sign=config["alternate_sign"], norm=config["norm"],
                             binary=config["binary"], dtype=np.float64)


def mean_token_values(token_ids: list[list[int]], values: np.ndarray) -> np.ndarray:
    """Per text, the mean of values over its word pieces (0 for a text with none)."""
    out = np.zeros((len(token_ids), *values.shape[1:]), dtype=np.float64)
    for i, ids in enumerate(token_ids):
        if ids:
            out[i] = values[ids].mean(axis=0)
    return out


@dataclass
class Prefilter:
    """decision = hashed n-grams . ngram_coef + mean(token_weights[pieces]) + intercept;
    p = sigmoid(decision), Platt-calibrated on out-of-fold scores of labels/train; a passage
    goes on to the encoder when p >= threshold."""

    ngram_coef: np.ndarray  # [n_features]
    intercept: float
    threshold: float
    token_weights: np.ndarray | None = None  # [vocab]: the encoder's word pieces
    config: dict | None = None
    report: dict | None = None

    def __post_init__(self):
        self.config = dict(self.config or HASHING)
        self._vectorizer = vectorizer(self.config)

    @property
    def uses_tokens(self) -> bool:
        return self.token_weights is not None

    def decision(self, texts: list[str], token_ids: list[list[int]] | None = None
                 ) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        d = self._vectorizer.transform(texts) @ self.ngram_coef.astype(np.float64)
        if self.uses_tokens:
            d = d + mean_token_values(token_ids, self.token_weights.astype(np.float64))
        return np.asarray(d, dtype=np.float64) + self.intercept

    def probability(self, texts: list[str], token_ids: list[list[int]] | None = None
                    ) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.decision(texts, token_ids), -40, 40)))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"ngram_coef": self.ngram_coef.astype(np.float32),
               "intercept": np.array([self.intercept], dtype=np.float64)}
        if self.uses_tokens:
            out["token_weights"] = self.token_weights.astype(np.float32)
        return out

    def section(self, sha256: str) -> dict:
        """model.json's `prefilter`: what a reader needs to rebuild and trust it."""
        return {"kind": KIND, "file": FILE, "sha256": sha256, "hashing": self.config,
                "tokens": ({"source": "encoder word pieces", "vocab_size":
                            int(len(self.token_weights))} if self.uses_tokens else None),
                "threshold": self.threshold, "cv": self.report or {}}


def static_token_vectors(encoder, cache_dir: Path | None) -> np.ndarray | None:
    """One vector per word piece of the encoder (each encoded alone), cached by encoder key;
    None for an encoder without a vocabulary (the hashing test encoder)."""
    if not hasattr(encoder, "word_piece_vectors"):
        return None
    path = Path(cache_dir) / "prefilter" / f"{encoder.key}-pieces.npy" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a damaged cache is only a cache
    vectors = encoder.word_piece_vectors()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
    return vectors


def _fit(x, y, c: float):
    from sklearn.linear_model import LogisticRegression

    # liblinear: 5x faster than lbfgs on these sparse problems (0.3 s vs 1.6 s on labels/train
    # here) and deterministic with a fixed random_state
    model = LogisticRegression(C=c, solver="liblinear", max_iter=5000, tol=1e-6,
                               random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
    return model


def _recall_threshold(scores: np.ndarray, target: float) -> float:
    """The highest cut that keeps at least `target` of these scores."""
    ordered = np.sort(scores)
    return float(ordered[int(np.floor((1.0 - target) * len(ordered)))])


def fit_prefilter(texts: list[str], y_any: np.ndarray, y_misaligned: np.ndarray,
                  ordinary: np.ndarray, token_ids: list[list[int]] | None = None,
                  piece_vectors: np.ndarray | None = None, recall: float = RECALL_TARGET,
                  c: float = C, folds: int = FOLDS, seed: int = SEED) -> Prefilter:
    """Fit "any label" vs none on labels/train; the threshold is the out-of-fold score that
    keeps `recall` of the misaligned positives. The report holds the CV numbers."""
    from scipy import sparse
    from threadpoolctl import threadpool_limits

    x = vectorizer(HASHING).transform(texts)
    tokens = piece_vectors is not None and token_ids is not None
    if tokens:
        x = sparse.hstack([x, sparse.csr_matrix(mean_token_values(token_ids, piece_vectors))
                           ]).tocsr()
    y = np.asarray(y_any, dtype=int)
    if y.min() == y.max():
        raise ValueError("the prefilter needs passages with and without labels in labels/train")
    oof = np.zeros(len(texts))
    order = np.random.default_rng(seed).permutation(len(texts))
    with threadpool_limits(limits=1, user_api="blas"):  # reproducible sums, and faster here
        for k in range(folds):
            held = order[k::folds]
            rest = np.ones(len(texts), dtype=bool)
            rest[held] = False
            if y[rest].min() == y[rest].max():
                continue  # a tiny label set: this fold cannot fit; its rows score 0
            oof[held] = _fit(x[rest], y[rest], c).decision_function(x[held])
        whole = _fit(x, y, c)
        platt = _fit(oof.reshape(-1, 1), y, 1e4)
    a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    p_oof = 1.0 / (1.0 + np.exp(-np.clip(a * oof + b, -40, 40)))
    mis = np.asarray(y_misaligned, dtype=bool)
    positives = p_oof[mis] if mis.any() else p_oof[y == 1]
    threshold = _recall_threshold(positives, recall)
    passed = p_oof >= threshold
    negatives = y == 0
    ordinary = np.asarray(ordinary, dtype=bool) & negatives
    report = {"folds": folds, "seed": seed, "C": c, "recall_target": recall,
              "features": "hashed word 1-2-grams" + (" + mean word-piece vector of the "
                                                       "encoder" if tokens else ""),
              "target": "any label vs none", "n": len(texts),
              "misaligned_positives": int(mis.sum()),
              "misaligned_recall": _share(passed[mis]),
              "any_label_recall": _share(passed[y == 1]),
              "ordinary_passages": int(ordinary.sum()),
              "ordinary_pass_rate": _share(passed[ordinary]),
              "negative_pass_rate": _share(passed[negatives])}
    coef = whole.coef_[0] * a
    n_hash = HASHING["n_features"]
    weights = piece_vectors.astype(np.float64) @ coef[n_hash:] if tokens else None
    return Prefilter(ngram_coef=coef[:n_hash].astype(np.float32),
                     intercept=float(whole.intercept_[0] * a + b), threshold=threshold,
                     token_weights=None if weights is None else weights.astype(np.float32),
                     config=HASHING, report=report)


def _share(flags: np.ndarray) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None
