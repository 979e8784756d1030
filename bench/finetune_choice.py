"""Choose the fine-tuning recipe on labels/train only: fine-tune on five sixths of train,
measure on the remaining sixth (which neither the encoder nor the head saw), after every
epoch. Prints one row per (recipe, epoch); writes bench/out/finetune_choice.json.

    .venv/bin/python bench/finetune_choice.py [--recipes bce256,bce128] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RECIPES = {
    "bce256": {"max_tokens": 256},
    "bce128": {"max_tokens": 128},
}


def main() -> None:
    import torch
    from choice_metrics import held_out_scores

    from tropes.training.finetune import (
        FinetuneConfig,
        base_sentence_transformer,
        finetune_body,
        group_targets,
    )
    from tropes.training.labelset import read_labels

    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", default="bce256,bce128")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--labels-dir", default=str(Path(__file__).parent.parent / "labels"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    labels = read_labels(Path(args.labels_dir))
    texts, y = labels.matrix("train")
    groups = [lb.group for lb in labels.taxonomy.labels]
    targets = np.hstack([y, group_targets(y, groups)])
    rng = np.random.default_rng(0)
    val_mask = np.zeros(len(texts), dtype=bool)
    val_mask[rng.permutation(len(texts))[: len(texts) // 6]] = True
    fit_idx, val_idx = np.nonzero(~val_mask)[0], np.nonzero(val_mask)[0]
    rows = []

    def measure(recipe: str, epoch: int, model, started: float) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            vectors = model.encode(texts, batch_size=16, convert_to_tensor=True,
                                   normalize_embeddings=True).float().numpy()
        row = {"recipe": recipe, "epoch": epoch,
               **held_out_scores(vectors, y, labels.taxonomy, fit_idx, val_idx),
               "minutes": round((time.time() - started) / 60, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    started = time.time()
    measure("frozen", 0, base_sentence_transformer(), started)
    for name in args.recipes.split(","):
        config = FinetuneConfig(epochs=args.epochs, **RECIPES[name])
        model = base_sentence_transformer()
        started = time.time()
        finetune_body(model, [texts[i] for i in fit_idx], targets[fit_idx], config,
                      progress=True,
                      after_epoch=lambda e, m, n=name, s=started: measure(n, e, m, s))
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "finetune_choice.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
