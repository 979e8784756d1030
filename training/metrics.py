"""Quality numbers: per-label precision/recall/F1, micro/macro F1, portrayal accuracy."""

from __future__ import annotations

import numpy as np

from .taxonomy import Taxonomy


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def evaluate(taxonomy: Taxonomy, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    per_label = {}
    totals = np.zeros(3)
    for j, label in enumerate(taxonomy.ids):
        t, p = y_true[:, j].astype(bool), y_pred[:, j].astype(bool)
        tp, fp, fn = float((t & p).sum()), float((~t & p).sum()), float((t & ~p).sum())
        totals += (tp, fp, fn)
        precision, recall, f1 = _prf(tp, fp, fn)
        per_label[label] = {"precision": round(precision, 4), "recall": round(recall, 4),
                            "f1": round(f1, 4), "support": int(t.sum())}
    ids = taxonomy.ids

    def portrayal(row):
        return taxonomy.portrayal([ids[j] for j in np.nonzero(row)[0]])

    true_p = [portrayal(r) for r in y_true]
    pred_p = [portrayal(r) for r in y_pred]
    misaligned = np.array([g == "misaligned" for g in (lb.group for lb in taxonomy.labels)])
    gold_mis = y_true[:, misaligned].any(axis=1)
    pred_mis = y_pred[:, misaligned].any(axis=1).astype(bool)
    mis_prf = _prf(float((gold_mis & pred_mis).sum()), float((~gold_mis & pred_mis).sum()),
                   float((gold_mis & ~pred_mis).sum()))
    none = ~y_true.astype(bool).any(axis=1)
    return {
        "n": int(len(y_true)),
        "macro_f1": round(float(np.mean([v["f1"] for v in per_label.values()])), 4),
        "micro_f1": round(_prf(*totals)[2], 4),
        # "is any misaligned behaviour portrayed": the filter a corpus team applies
        "misaligned_f1": round(mis_prf[2], 4),
        "misaligned_precision": round(mis_prf[0], 4),
        "misaligned_recall": round(mis_prf[1], 4),
        # share of passages with no gold label that get some label: false alarms on plain text
        "none_flagged": round(float(y_pred[none].astype(bool).any(axis=1).mean())
                              if none.any() else 0.0, 4),
        "portrayal_accuracy": round(float(np.mean([a == b for a, b in zip(true_p, pred_p)]))
                                    if len(true_p) else 0.0, 4),
        "per_label": per_label,
    }


def format_metrics(metrics: dict) -> str:
    lines = [f"{'label':<22}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}"]
    for label, m in metrics["per_label"].items():
        lines.append(f"{label:<22}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}"
                     f"{m['support']:>9}")
    lines.append(f"\nmacro-F1 {metrics['macro_f1']:.3f}   micro-F1 {metrics['micro_f1']:.3f}   "
                 f"portrayal accuracy {metrics['portrayal_accuracy']:.3f}   (n={metrics['n']})")
    if "misaligned_f1" in metrics:
        lines.append(f"misaligned-vs-not F1 {metrics['misaligned_f1']:.3f}   no-label passages "
                     f"given a label {metrics['none_flagged']:.3f}")
    return "\n".join(lines)
