"""Choose between stored encoder versions on labels/train only: every version is measured on
the train passages that none of them was fine-tuned on (the hash-held-out sixth, plus
passages written after the oldest was trained), with the head fitted on the other train
passages. Prints one row per encoder; writes bench/out/encoder_choice.json.

    .venv/bin/python bench/encoder_choice.py [--encoders enc-a,enc-b] [--frozen]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).parent.parent


def main() -> None:
    from choice_metrics import held_out_scores

    from tropes.training.embeddings import embed_with_cache, load_encoder
    from tropes.training.encoder_store import list_encoders, read_encoder_record, seen_mask
    from tropes.training.labelset import read_labels

    parser = argparse.ArgumentParser()
    parser.add_argument("--encoders", help="comma-separated versions (default: all stored)")
    parser.add_argument("--frozen", action="store_true", help="also the base encoder")
    parser.add_argument("--models-dir", default=str(REPO / "models"))
    parser.add_argument("--labels-dir", default=str(REPO / "labels"))
    args = parser.parse_args()
    models_dir = Path(args.models_dir)
    versions = args.encoders.split(",") if args.encoders else list_encoders(models_dir)

    labels = read_labels(Path(args.labels_dir))
    texts, y = labels.matrix("train")
    seen = np.zeros(len(texts), dtype=bool)
    for v in versions:
        seen |= seen_mask(texts, read_encoder_record(models_dir, v))
    fit_idx, val_idx = np.nonzero(seen)[0], np.nonzero(~seen)[0]
    print(f"{len(texts)} train passages; {len(val_idx)} seen by none of {versions}")
    rows = []
    for v in ([None] if args.frozen else []) + versions:
        encoder = load_encoder("minilm", precision="bf16", encoder_version=v,
                               models_dir=models_dir)
        vectors, _ = embed_with_cache(encoder, texts, REPO / ".cache", progress=True)
        row = {"encoder": v or "frozen base",
               **held_out_scores(vectors, y, labels.taxonomy, fit_idx, val_idx)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "encoder_choice.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
