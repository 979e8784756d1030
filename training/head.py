"""The classifier head: one-vs-rest logistic regression with C chosen by cross-validation,
then Platt-calibrated on out-of-fold scores and folded back into plain weights."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

C_GRID = (0.25, 1.0, 4.0, 16.0)
CLASS_WEIGHTS = ("balanced", None)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


@dataclass
class Head:
    coef: np.ndarray  # [labels, features]
    intercept: np.ndarray  # [labels]

    def decision(self, x: np.ndarray) -> np.ndarray:
        # float64: float32 sums change in the last bits with batch size (BLAS blocking), which
        # flips 4-decimal scores between a batch of 1 and a batch of 256
        return x.astype(np.float64) @ self.coef.T.astype(np.float64) + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.decision(x))


def _fit_column(x, y, c, class_weight, start=None):
    """(coef, intercept) of one label's logistic regression; `start`, a (coef, intercept)
    from a nearby C, is where lbfgs begins (the optimum is the same, it gets there sooner)."""
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():  # a label with one class: constant score
        return np.zeros(x.shape[1]), (8.0 if y[0] else -8.0)
    model = LogisticRegression(C=c, class_weight=class_weight, max_iter=5000, tol=1e-6,
                               warm_start=start is not None)
    if start is not None:
        model.coef_, model.intercept_ = start[0][None, :].copy(), np.array([start[1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
    return model.coef_[0], float(model.intercept_[0])


def fit_ovr(x: np.ndarray, y: np.ndarray, c: float, class_weight, start: Head | None = None
            ) -> Head:
    fitted = [_fit_column(x, y[:, j], c, class_weight,
                          None if start is None else (start.coef[j], start.intercept[j]))
              for j in range(y.shape[1])]
    return Head(np.stack([w for w, _ in fitted]), np.array([b for _, b in fitted]))


def fold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::folds] for i in range(folds)]


def out_of_fold_path(x, y, c_grid, class_weight, folds=5, seed=0) -> dict[float, np.ndarray]:
    """Out-of-fold decisions for every C of the grid. Each fold walks C upwards and starts
    each fit from the previous C's weights: a warm start, the same optima, about half the
    lbfgs iterations (the search is most of a warm retrain's time)."""
    out = {c: np.zeros(y.shape, dtype=np.float64) for c in c_grid}
    for test_idx in fold_indices(len(x), folds, seed):
        train_mask = np.ones(len(x), dtype=bool)
        train_mask[test_idx] = False
        head = None
        for c in sorted(c_grid):
            head = fit_ovr(x[train_mask], y[train_mask], c, class_weight, start=head)
            out[c][test_idx] = head.decision(x[test_idx])
    return out


def platt(decisions: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Fit p = sigmoid(a * d + b) on out-of-fold decisions of one label."""
    if y.min() == y.max():
        return 1.0, 0.0
    w, b = _fit_column(decisions.reshape(-1, 1), y, 1e4, None)
    return float(w[0]), b


def fit_head(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0,
             c_grid=C_GRID, class_weights=CLASS_WEIGHTS, progress: bool = False,
             calibrate_rows: np.ndarray | None = None):
    """Returns (calibrated head, calibrated out-of-fold probabilities, search report).

    calibrate_rows: the rows whose out-of-fold scores may choose C and fit the Platt scaling
    (default all). Rows the encoder was fine-tuned on score over-confidently, so they help
    fit the head but never calibrate it."""
    from threadpoolctl import threadpool_limits

    rows = np.ones(len(x), dtype=bool) if calibrate_rows is None else calibrate_rows
    # Multithreaded OpenBLAS is ~25x slower on these small problems (measured here: 2.45 s
    # vs 0.10 s for ten fits), and one thread also makes the sums, so the fit, reproducible.
    with threadpool_limits(limits=1, user_api="blas"):
        return _search(x, y, folds, seed, c_grid, class_weights, progress, rows)


def _search(x, y, folds, seed, c_grid, class_weights, progress, rows):
    from sklearn.metrics import average_precision_score
    from tqdm import tqdm

    report = []
    best = None
    for cw in tqdm(class_weights, desc="choosing C", disable=not progress):
        path = out_of_fold_path(x, y, c_grid, cw, folds, seed)
        for c in c_grid:
            oof = path[c]
            ap = float(np.mean([average_precision_score(y[rows, j], oof[rows, j])
                                for j in range(y.shape[1]) if y[rows, j].any()]))
            report.append({"C": c, "class_weight": cw or "none",
                           "cv_mean_average_precision": round(ap, 4)})
            if best is None or ap > best[0] + 1e-9:
                best = (ap, c, cw, oof)
    _, c, cw, oof = best
    scales = [platt(oof[rows, j], y[rows, j]) for j in range(y.shape[1])]
    a = np.array([s for s, _ in scales])
    b = np.array([t for _, t in scales])
    oof_probs = sigmoid(oof * a + b)
    raw = fit_ovr(x, y, c, cw)
    head = Head(raw.coef * a[:, None], raw.intercept * a + b)
    return head, oof_probs, {"C": c, "class_weight": cw or "none", "folds": folds,
                             "seed": seed, "calibration_rows": int(rows.sum()), "grid": report}
