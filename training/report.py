"""report.md and plots written beside the weights of each model version."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import format_metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(path: Path, labels: list[str], y: np.ndarray, probs: np.ndarray,
                   thresholds: np.ndarray) -> None:
    from sklearn.metrics import precision_recall_curve

    plt = _pyplot()
    cols = 5
    rows = int(np.ceil(len(labels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for j, label in enumerate(labels):
        ax = axes[j // cols][j % cols]
        if y[:, j].any():
            precision, recall, cuts = precision_recall_curve(y[:, j], probs[:, j])
            ax.plot(recall, precision)
            k = int(np.searchsorted(cuts, thresholds[j]))
            k = min(k, len(cuts) - 1)
            ax.plot(recall[k], precision[k], "o", color="C3", label=f"t={thresholds[j]:.2f}")
            ax.legend(loc="lower left", fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
    for j in range(len(labels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("Precision-recall per label (test split; dot = threshold)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_reliability(path: Path, y: np.ndarray, probs: np.ndarray, bins: int = 10) -> None:
    plt = _pyplot()
    p, t = probs.ravel(), y.ravel()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    mean_p = [p[which == b].mean() for b in range(bins) if (which == b).any()]
    frac = [t[which == b].mean() for b in range(bins) if (which == b).any()]
    counts = [int((which == b).sum()) for b in range(bins) if (which == b).any()]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(mean_p, frac, "o-", label="model")
    for x, yv, n in zip(mean_p, frac, counts):
        ax.annotate(str(n), (x, yv), fontsize=7, textcoords="offset points", xytext=(3, -9))
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability, all labels (test split)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    p, t = probs.ravel(), y.ravel()
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    return float(sum(abs(p[which == b].mean() - t[which == b].mean()) * (which == b).sum()
                     for b in range(bins) if (which == b).any()) / max(len(p), 1))


def write_report(folder: Path, meta: dict, labels: list[str], y_test: np.ndarray,
                 test_probs: np.ndarray, thresholds: np.ndarray) -> None:
    plot_pr_curves(folder / "pr_curves.png", labels, y_test, test_probs, thresholds)
    plot_reliability(folder / "reliability.png", y_test, test_probs)
    metrics = meta["metrics"]
    search = meta["params"]["search"]
    lines = [
        f"# tropes model {meta['version']}",
        "",
        f"Created {meta['created']} from {meta['training_data']['train']} train and "
        f"{meta['training_data']['test']} test passages "
        f"(labels sha256 `{meta['training_data']['sha256'][:16]}`).",
        f"Encoder: {meta['encoder']['model']} ({meta['encoder']['package']} "
        f"{meta['encoder']['package_version']}, {meta['encoder']['precision']}).",
        f"Head: one-vs-rest logistic regression, C={search['C']}, class_weight="
        f"{search['class_weight']}, Platt-calibrated on {search['folds']}-fold out-of-fold "
        f"scores; thresholds profile `{meta['threshold_profile']}`.",
        "",
        "## Test split",
        "```",
        format_metrics(metrics["test"]),
        "```",
        f"Expected calibration error (test): {metrics['test_ece']:.3f}",
        "",
        "## Cross-validation on train (out-of-fold)",
        "```",
        format_metrics(metrics["cv"]),
        "```",
        "",
        "![precision-recall](pr_curves.png)",
        "",
        "![reliability](reliability.png)",
        "",
    ]
    (folder / "report.md").write_text("\n".join(lines))
