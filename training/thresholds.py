"""Per-label decision thresholds from out-of-fold probabilities."""

from __future__ import annotations

import numpy as np


def _f1_curve(scores: np.ndarray, y: np.ndarray):
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], y[order].astype(np.float64)
    tp = np.cumsum(t)
    fp = np.cumsum(1 - t)
    positives = max(t.sum(), 1.0)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / positives
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a threshold can only sit between scores
    return s[last_of_tie], f1[last_of_tie], recall[last_of_tie]


def best_f1_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The threshold that maximises F1; placed midway to the next lower score."""
    if y.sum() == 0:
        return 0.5
    s, f1, _ = _f1_curve(scores, y)
    best = int(np.argmax(f1))
    below = s[best + 1] if best + 1 < len(s) else 0.0
    return float((s[best] + below) / 2)


def min_recall_threshold(scores: np.ndarray, y: np.ndarray, min_recall: float) -> float:
    """The highest threshold whose recall is at least min_recall."""
    if y.sum() == 0:
        return 0.5
    s, _, recall = _f1_curve(scores, y)
    ok = np.nonzero(recall >= min_recall - 1e-12)[0]
    i = int(ok[0]) if len(ok) else len(s) - 1
    below = s[i + 1] if i + 1 < len(s) else 0.0
    return float((s[i] + below) / 2)


def pick_thresholds(probs: np.ndarray, y: np.ndarray, min_recall: float | None = None):
    columns = range(y.shape[1])
    if min_recall is None:
        return [best_f1_threshold(probs[:, j], y[:, j]) for j in columns]
    return [min_recall_threshold(probs[:, j], y[:, j], min_recall) for j in columns]


def pick_gated_thresholds(label_probs: np.ndarray, y: np.ndarray, group_probs: np.ndarray,
                          y_groups: np.ndarray, label_group: list[int],
                          min_recall: float | None = None):
    """Group thresholds first, then each label's threshold on its scores with the gate
    applied (a passage whose group score is under the group threshold scores 0)."""
    group_t = pick_thresholds(group_probs, y_groups, min_recall)
    open_gate = group_probs >= np.asarray(group_t)
    gated = label_probs * open_gate[:, label_group]
    return pick_thresholds(gated, y, min_recall), group_t
