"""Quality of a model version, as a user of a corpus filter sees it.

    .venv/bin/python bench/quality.py                  # the LATEST model
    .venv/bin/python bench/quality.py --learning-curve 0.25 0.5   # + retrain on fractions

Prints the test split's macro-F1, misaligned-vs-not F1 and the share of no-label test
passages given a label, then the share of bench/data/ordinary_holdout.jsonl (ordinary
everyday passages written apart from labels/, never trained on) given any label and given
a misaligned one. --learning-curve fine-tunes and trains from scratch on a random fraction
of every train file (same protocol as `tropes train --finetune`) and reports the same
numbers, so we know whether more data still pays. Writes bench/out/quality.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def evaluate_model(models_dir: Path, labels_dir: Path, version: str | None = None) -> dict:
    import numpy as np

    import tropes
    from tropes.training.labelset import read_labels
    from tropes.training.metrics import evaluate

    classifier = tropes.load(version, models_dir=models_dir)
    labels = read_labels(labels_dir)
    texts, y = labels.matrix("test")
    test = evaluate(labels.taxonomy, y, classifier.model.present(classifier.scores(texts)))
    ordinary = [json.loads(line)["text"] for line in
                (ROOT / "bench" / "data" / "ordinary_holdout.jsonl").read_text().splitlines()]
    results = classifier.tag(ordinary)
    flagged = [r for r in results if r.labels]
    return {
        "version": classifier.version,
        "test_macro_f1": test["macro_f1"],
        "test_micro_f1": test["micro_f1"],
        "test_misaligned_f1": test["misaligned_f1"],
        "test_none_flagged": test["none_flagged"],
        "ordinary_n": len(ordinary),
        "ordinary_any_label": round(len(flagged) / len(ordinary), 4),
        "ordinary_misaligned": round(float(np.mean([r.portrayal in ("misaligned", "mixed")
                                                    for r in results])), 4),
        "ordinary_flagged_examples": [(o[:80], r.labels) for o, r in zip(ordinary, results)
                                      if r.labels][:10],
        "per_label_f1": {k: v["f1"] for k, v in test["per_label"].items()},
    }


def fraction_labels(dest: Path, fraction: float, seed: int = 0) -> Path:
    """labels/ with a random fraction of every train file (test kept whole), minimums off."""
    shutil.copytree(ROOT / "labels", dest, ignore=shutil.ignore_patterns("*.md"))
    taxonomy = dest / "taxonomy.yaml"
    text = taxonomy.read_text()
    taxonomy.write_text(text.replace("min_positives: 80", "min_positives: 1"))
    rng = random.Random(seed)
    for path in sorted((dest / "train").glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        path.write_text("".join(line for line in lines if rng.random() < fraction),
                        encoding="utf-8")
    return dest


def learning_curve_point(fraction: float) -> dict:
    from tropes.training.settings import load_settings
    from tropes.training.train import train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        labels = fraction_labels(tmp / "labels", fraction)
        settings = load_settings(labels_dir=labels, models_dir=tmp / "models",
                                 cache_dir=tmp / "cache")
        started = time.time()
        outcome = train(settings, finetune=True, use_cache=False, version="v-curve")
        row = evaluate_model(tmp / "models", labels, "v-curve")
        row.update(fraction=fraction, train_passages=outcome.model.meta["training_data"]["train"],
                   minutes=round((time.time() - started) / 60, 1))
        return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--learning-curve", type=float, nargs="*", default=None)
    args = parser.parse_args()
    rows = [dict(evaluate_model(ROOT / "models", ROOT / "labels"), fraction=1.0)]
    for fraction in args.learning_curve or []:
        rows.append(learning_curve_point(fraction))
    keys = ["fraction", "test_macro_f1", "test_misaligned_f1", "test_none_flagged",
            "ordinary_any_label", "ordinary_misaligned"]
    print(" ".join(f"{k:>20}" for k in keys))
    for row in rows:
        print(" ".join(f"{row.get(k, ''):>20}" for k in keys))
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "quality.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
