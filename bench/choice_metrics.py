"""One way of scoring an encoder on held-out train passages, shared by the choice benches:
fit the head on the other train passages, then on the held-out ones measure mean average
precision, and (thresholds picked on one half, applied to the other, both ways) macro-F1,
the share of no-label passages given a label and misaligned-vs-not F1, as
tropes.training.metrics.evaluate counts them."""

from __future__ import annotations

import numpy as np


def held_out_scores(vectors: np.ndarray, y: np.ndarray, taxonomy, fit_idx: np.ndarray,
                    val_idx: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score

    from tropes.training.head import fit_head
    from tropes.training.metrics import evaluate
    from tropes.training.thresholds import pick_thresholds

    head, _, _ = fit_head(vectors[fit_idx], y[fit_idx])
    probs, yv = head.predict_proba(vectors[val_idx]), y[val_idx]
    ap = float(np.mean([average_precision_score(yv[:, j], probs[:, j])
                        for j in range(y.shape[1])]))
    halves = [np.arange(0, len(val_idx), 2), np.arange(1, len(val_idx), 2)]
    folds = []
    for a, b in (halves, halves[::-1]):
        cut = np.asarray(pick_thresholds(probs[a], yv[a]))
        folds.append(evaluate(taxonomy, yv[b], probs[b] >= cut))

    def mean(key: str) -> float:
        return round(float(np.mean([m[key] for m in folds])), 4)

    return {"val_mean_ap": round(ap, 4), "val_macro_f1": mean("macro_f1"),
            "val_none_flagged": mean("none_flagged"),
            "val_misaligned_f1": mean("misaligned_f1"), "n_val": int(len(val_idx))}
