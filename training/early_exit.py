"""The cascade's second stage: an early exit inside the encoder. The passages the prefilter
passes run through the encoder's first `layer` transformer layers; a logistic regression on
the mean of those hidden states (L2-normalised) says whether the passage could carry any
label. Those it rejects stop there, with their scores from this stage; the others go on
through the remaining layers (their hidden states are reused, so nothing is computed twice)
to the head.

Why layer 2 of 6: measured by 5-fold CV on labels/train with the fine-tuned encoder, among
the ordinary train passages the prefilter passes and the encoder never trained on, at 99.5%
recall on misaligned positives, an exit after layer 2 passes 43-51% (C 3-30) for a third of
the encoder's cost, one after layer 3 passes 35-48% for half of it: layer 2 costs less per
passed passage (0.33 + 0.45 x 0.67 = 0.63 of a full pass against 0.70). Max-pooled hidden
states and the first layer's mean beside the second's gave nothing more.

Calibration and the threshold come from out-of-fold scores of the train passages the
encoder never trained on (on the others its hidden states are over-confident), as for the
head. Everything is arrays (early_exit.npz) and JSON (model.json's `early_exit`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

KIND = "layer_mean_lr"
FILE = "early_exit.npz"
LAYER = 2
RECALL_TARGET = 0.995  # of misaligned positives, out of fold, on passages the encoder never saw
C = 30.0  # best of 3 and 30 in the CV measurements above (fewer ordinary passed)
FOLDS = 5
SEED = 0


def normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


@dataclass
class EarlyExit:
    """p = sigmoid(normalise(mean of layer `layer`'s hidden states) . coef + intercept),
    Platt-calibrated; a passage goes on through the remaining layers when p >= threshold."""

    layer: int
    coef: np.ndarray  # [dim]
    intercept: float
    threshold: float
    report: dict | None = None

    def probability(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0)
        d = normalise(features) @ self.coef.astype(np.float64) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(d, -40, 40)))

    def keeps(self, features: np.ndarray) -> np.ndarray:
        return self.probability(features) >= self.threshold

    def arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef.astype(np.float32),
                "intercept": np.array([self.intercept], dtype=np.float64)}

    def section(self, sha256: str) -> dict:
        """model.json's `early_exit`: what a reader needs to rebuild and trust it."""
        return {"kind": KIND, "file": FILE, "sha256": sha256, "layer": self.layer,
                "dim": int(len(self.coef)), "threshold": self.threshold,
                "cv": self.report or {}}


def _fit(x, y, c: float):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=5000, tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
    return model


def _share(flags: np.ndarray) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def fit_early_exit(features: np.ndarray, y_any: np.ndarray, y_misaligned: np.ndarray,
                   calibrate: np.ndarray, ordinary: np.ndarray, layer: int = LAYER,
                   recall: float = RECALL_TARGET, c: float = C, folds: int = FOLDS,
                   seed: int = SEED) -> EarlyExit | None:
    """"Any label" vs none on layer `layer`'s mean hidden states of labels/train; the threshold
    keeps `recall` of the out-of-fold misaligned positives among the calibration rows (those
    the encoder never trained on). None when those rows hold too few positives to set it."""
    from threadpoolctl import threadpool_limits

    x = normalise(features)
    y = np.asarray(y_any, dtype=int)
    calibrate = np.asarray(calibrate, dtype=bool)
    mis = np.asarray(y_misaligned, dtype=bool)
    if y.min() == y.max() or (mis & calibrate).sum() < 20:
        return None
    oof = np.zeros(len(x))
    order = np.random.default_rng(seed).permutation(len(x))
    with threadpool_limits(limits=1, user_api="blas"):  # reproducible sums
        for k in range(folds):
            held = order[k::folds]
            rest = np.ones(len(x), dtype=bool)
            rest[held] = False
            if y[rest].min() == y[rest].max():
                continue
            oof[held] = _fit(x[rest], y[rest], c).decision_function(x[held])
        whole = _fit(x, y, c)
        platt = _fit(oof[calibrate].reshape(-1, 1), y[calibrate], 1e4)
    a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    p_oof = 1.0 / (1.0 + np.exp(-np.clip(a * oof + b, -40, 40)))
    positives = np.sort(p_oof[mis & calibrate])
    threshold = float(positives[int(np.floor((1.0 - recall) * len(positives)))])
    passed = p_oof >= threshold
    negatives = (y == 0) & calibrate
    ordinary = np.asarray(ordinary, dtype=bool) & negatives
    report = {"folds": folds, "seed": seed, "C": c, "layer": layer, "recall_target": recall,
              "features": f"mean of layer {layer}'s hidden states, L2-normalised",
              "target": "any label vs none", "n": len(x),
              "calibration_rows": int(calibrate.sum()),
              "misaligned_positives": int((mis & calibrate).sum()),
              "misaligned_recall": _share(passed[mis & calibrate]),
              "any_label_recall": _share(passed[(y == 1) & calibrate]),
              "ordinary_passages": int(ordinary.sum()),
              "ordinary_pass_rate": _share(passed[ordinary]),
              "negative_pass_rate": _share(passed[negatives])}
    return EarlyExit(layer=layer, coef=(whole.coef_[0] * a).astype(np.float32),
                     intercept=float(whole.intercept_[0] * a + b), threshold=threshold,
                     report=report)
