"""The cascade on a realistic mix: how much faster, and what it costs.

    .venv/bin/python bench/cascade.py                 # the LATEST model, defaults below
    .venv/bin/python bench/cascade.py --ordinary 300 --positive-share 0.02 --recall-limit 200

The mix: ordinary text (the labels/test passages with no label from the ordinary web files,
and bench/data/ordinary_holdout.jsonl, written apart from labels/ and never trained on) with
about 2% AI-portrayal passages drawn from labels/test. Prints, from one run on this machine:

- end-to-end passages/s of `Classifier.tag` on the mix with the cascade (prefilter and early
  exit), with the prefilter alone, and with the full encoder on every passage (same model,
  same encoder object; ratios; goal >= 5x);
- the misaligned positives of labels/test either stage rejects (goal <= 1%), also counted
  among those the full model itself flags (what the cascade takes away from its output);
- the share of ordinary text each stage passes on (each source apart);
- agreement of labels between the two on the passages it passes, and on the whole mix.

Prints numbers only; no assertion. About 1-3 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_pools(labels_dir: Path):
    from tropes.training.labelset import read_labels
    from tropes.training.prefilter import ORDINARY_FILES

    labels = read_labels(labels_dir)
    misaligned = {lb.id for lb in labels.taxonomy.labels if lb.group == "misaligned"}
    test = labels.split("test")
    ordinary_test = [p.text for p in test
                     if not p.labels and Path(p.file).stem in ORDINARY_FILES]
    holdout = [json.loads(line)["text"] for line in
               (ROOT / "bench" / "data" / "ordinary_holdout.jsonl").read_text().splitlines()]
    positives = [p.text for p in test if p.labels]
    mis_positives = [p.text for p in test if misaligned & set(p.labels)]
    return ordinary_test, holdout, positives, mis_positives


def timed_tag(classifier, texts, repeats: int):
    best, results = None, None
    for _ in range(repeats):
        start = time.perf_counter()
        results = classifier.tag(texts)
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return len(texts) / best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ordinary", type=int, default=400,
                        help="ordinary passages in the timed mix (half from each source)")
    parser.add_argument("--positive-share", type=float, default=0.02)
    parser.add_argument("--recall-limit", type=int, default=None,
                        help="misaligned test positives scored by the full model for the "
                             "'flagged by the full model' loss (default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs each; best kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--labels-dir", type=Path, default=ROOT / "labels")
    args = parser.parse_args()

    from tropes.classifier import Classifier, load

    cascade = load(models_dir=args.models_dir)
    if cascade.prefilter is None:
        raise SystemExit(f"model {cascade.version} has no prefilter: retrain with tropes train")
    full = Classifier(cascade.model, cascade.encoder, prefilter=False)
    first_only = Classifier(cascade.model, cascade.encoder)
    first_only.early_exit = None
    ordinary_test, holdout, positives, mis_positives = load_pools(args.labels_dir)
    rng = random.Random(args.seed)

    # the prefilter alone, on everything (no encoder): pass rates and recall
    start = time.perf_counter()
    passed_test = cascade.screen(ordinary_test)[0]
    passed_holdout = cascade.screen(holdout)[0]
    screen_rate = (len(ordinary_test) + len(holdout)) / (time.perf_counter() - start)
    passed_mis = cascade.screen(mis_positives)[0]
    passed_pos = cascade.screen(positives)[0]
    # both stages (the early exit runs the encoder's first layers on what the prefilter passes)
    kept_mis = ~cascade.cascade_scores(mis_positives)[1]
    kept_pos = ~cascade.cascade_scores(positives)[1]
    kept_test = ~cascade.cascade_scores(ordinary_test)[1]
    kept_holdout = ~cascade.cascade_scores(holdout)[1]

    half = args.ordinary // 2
    ordinary = rng.sample(ordinary_test, min(half, len(ordinary_test))) + \
        rng.sample(holdout, min(args.ordinary - half, len(holdout)))
    n_pos = max(1, round(len(ordinary) * args.positive_share / (1 - args.positive_share)))
    mix = ordinary + rng.sample(positives, n_pos)
    rng.shuffle(mix)

    cascade.tag(mix[:32])  # warm-up: first calls pay for lazy set-up
    full.tag(mix[:32])
    first_only.tag(mix[:32])
    full_rate, full_results = timed_tag(full, mix, args.repeats)
    first_rate, _ = timed_tag(first_only, mix, args.repeats)
    cascade_rate, cascade_results = timed_tag(cascade, mix, args.repeats)
    passed_mix = [not r.extra.get("prefiltered") for r in cascade_results]
    agree_passed = [a.labels == b.labels for a, b, ok in
                    zip(cascade_results, full_results, passed_mix) if ok]
    agree_all = [a.labels == b.labels for a, b in zip(cascade_results, full_results)]

    sample = mis_positives if args.recall_limit is None else \
        rng.sample(mis_positives, min(args.recall_limit, len(mis_positives)))
    flags = {t: bool(r.labels) for t, r in zip(sample, full.tag(sample))}
    passed_of = dict(zip(mis_positives, kept_mis.tolist()))
    found = [t for t in sample if flags[t]]
    lost_found = [t for t in found if not passed_of[t]]

    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    n_lost = int((~kept_mis).sum())
    exit_stage = cascade.early_exit
    print(f"model {cascade.version}, encoder precision {cascade.encoder.describe()['precision']}"
          f", prefilter threshold {cascade.prefilter.threshold:.4f}, early exit " +
          (f"after layer {exit_stage.layer}, threshold {exit_stage.threshold:.4f}"
           if exit_stage else "none"))
    print(f"mix: {len(mix)} passages, {len(ordinary)} ordinary + {n_pos} AI-portrayal "
          f"({pct(n_pos / len(mix))}); the prefilter passed {int(cascade.screen(mix)[0].sum())}"
          f" to the encoder, {sum(passed_mix)} went through all its layers")
    print(f"end-to-end, Classifier.tag on the mix: full encoder {full_rate:.1f} passages/s, "
          f"prefilter only {first_rate:.1f} ({first_rate / full_rate:.2f}x), cascade "
          f"{cascade_rate:.1f}: {cascade_rate / full_rate:.2f}x (goal >= 5x)")
    print(f"prefilter alone: {screen_rate:,.0f} passages/s")
    print(f"misaligned positives of labels/test rejected by either stage: {n_lost} of "
          f"{len(mis_positives)} ({pct(n_lost / len(mis_positives))}; goal <= 1%; by the "
          f"prefilter {int((~passed_mis).sum())}); any-label positives rejected "
          f"{pct(1 - kept_pos.mean())} (prefilter {pct(1 - passed_pos.mean())})")
    print(f"  of those the full model flags: {len(lost_found)} of {len(found)} lost "
          f"({pct(len(lost_found) / max(len(found), 1))}; {len(sample)} scored)")
    both = (passed_test.sum() + passed_holdout.sum()) / (len(ordinary_test) + len(holdout))
    print(f"ordinary text the prefilter passes: labels/test ordinary {pct(passed_test.mean())}"
          f" of {len(ordinary_test)}, ordinary_holdout {pct(passed_holdout.mean())} of "
          f"{len(holdout)}, both {pct(both)}")
    through = (kept_test.sum() + kept_holdout.sum()) / (len(ordinary_test) + len(holdout))
    print(f"ordinary text through both stages: labels/test ordinary {pct(kept_test.mean())}, "
          f"ordinary_holdout {pct(kept_holdout.mean())}, both {pct(through)}")
    on_passed = sum(agree_passed) / max(len(agree_passed), 1)
    print(f"label agreement with the full encoder: {pct(on_passed)} of the "
          f"{len(agree_passed)} passages it passes, {pct(sum(agree_all) / len(agree_all))} "
          f"of the whole mix")

if __name__ == "__main__":
    main()
