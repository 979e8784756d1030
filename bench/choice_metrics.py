"""One way of scoring an encoder on held-out train passages, shared by the choice benches:
fit the head on the other train passages, then on the held-out ones measure mean average
precision, macro-F1 (thresholds picked on one half, applied to the other, both ways), the
share of no-label passages given a label, and misaligned-vs-not F1."""

from __future__ import annotations

import numpy as np


def held_out_scores(vectors: np.ndarray, y: np.ndarray, groups: list[str],
                    fit_idx: np.ndarray, val_idx: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score

    from tropes.training.head import fit_head
    from tropes.training.thresholds import pick_thresholds

    head, _, _ = fit_head(vectors[fit_idx], y[fit_idx])
    probs = head.predict_proba(vectors[val_idx])
    yv = y[val_idx]
    ap = float(np.mean([average_precision_score(yv[:, j], probs[:, j])
                        for j in range(y.shape[1])]))
    misaligned = np.array([g == "misaligned" for g in groups])
    halves = [val_idx[::2], val_idx[1::2]]
    f1s, flagged, mis_f1 = [], [], []
    for a, b in (halves, halves[::-1]):
        cut = np.asarray(pick_thresholds(head.predict_proba(vectors[a]), y[a]))
        pred = head.predict_proba(vectors[b]) >= cut
        yb = y[b]
        tp = (pred & (yb == 1)).sum(0)
        f1s.append(float((2 * tp / np.maximum(pred.sum(0) + yb.sum(0), 1)).mean()))
        flagged.append(float(pred[yb.sum(1) == 0].any(1).mean()))
        pm, gm = pred[:, misaligned].any(1), yb[:, misaligned].any(1)
        mis_f1.append(float(2 * (pm & gm).sum() / max(pm.sum() + gm.sum(), 1)))
    return {"val_mean_ap": round(ap, 4), "val_macro_f1": round(float(np.mean(f1s)), 4),
            "val_none_flagged": round(float(np.mean(flagged)), 4),
            "val_misaligned_f1": round(float(np.mean(mis_f1)), 4), "n_val": int(len(val_idx))}
