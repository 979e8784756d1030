"""tropes profile and tropes suggest over a small scored file."""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tropes.classifier import Classifier
from tropes.training.artifact import load_model
from tropes.training.embeddings import HashingEncoder
from tropes.training.labelset import read_labels

from .conftest import REPO, run_cli

EXE = str(Path(sys.executable).with_name("tropes"))


@pytest.fixture(scope="module")
def scored(hashing_workspace, tmp_path_factory):
    """Repo passages that the workspace's labels do not hold, scored by the hashing model."""
    known = {p.id for p in read_labels(hashing_workspace.labels_dir).passages}
    rows = [{"id": p.id, "text": p.text, "source": p.register}
            for p in read_labels(REPO / "labels").passages if p.id not in known][:300]
    predictor = Classifier(load_model(hashing_workspace.models_dir), HashingEncoder())
    results = predictor.tag([r["text"] for r in rows])
    path = tmp_path_factory.mktemp("scored") / "scored.jsonl"
    path.write_text("".join(json.dumps({**r, "tropes": t.to_dict()}) + "\n"
                            for r, t in zip(rows, results)))
    return path, rows, results


@dataclass
class TextRun:
    returncode: int
    stdout: str
    stderr: str


def cli(settings, *args):
    run = run_cli("--encoder", "hashing", "--models-dir", str(settings.models_dir),
                  "--labels-dir", str(settings.labels_dir), *args)
    return TextRun(run.returncode, run.stdout.decode(), run.stderr.decode())


def test_profile_counts_match_input_and_plots_exist(hashing_workspace, scored, tmp_path):
    path, rows, results = scored
    out = tmp_path / "profile"
    run = cli(hashing_workspace, "profile", str(path), "-o", str(out), "--by", "source")
    assert run.returncode == 0, run.stderr
    for label in load_model(hashing_workspace.models_dir).labels:
        expected = sum(label in r.labels for r in results)
        line = next(x for x in run.stdout.splitlines() if x.startswith(label + " "))
        assert int(line.split()[1]) == expected, line
    for portrayal in ("misaligned", "aligned", "mixed", "none"):
        expected = sum(r.portrayal == portrayal for r in results)
        line = next(x for x in run.stdout.splitlines() if x.startswith(f"portrayal {portrayal}"))
        assert int(line.split()[2]) == expected
    for name in ("profile.md", "cooccurrence.png", "score_histograms.png", "label_shares.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "profile.md").read_text()
    assert "## By `source`" in md and f"{len(rows):,} rows" in md


def test_profile_rejects_unscored_input(hashing_workspace, tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"text": "not scored yet"}) + "\n")
    run = cli(hashing_workspace, "profile", str(raw), "-o", str(tmp_path / "p"))
    assert run.returncode == 1 and "raw.jsonl:1: no 'tropes' object" in run.stderr


def test_suggest_picks_distinct_uncertain_passages_for_review(
        hashing_workspace, scored, tmp_path):
    path, rows, results = scored
    out = tmp_path / "suggest.jsonl"
    run = cli(hashing_workspace, "suggest", str(path), "--n", "12", "-o", str(out))
    assert run.returncode == 0, run.stderr
    picked = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(picked) == 12
    assert len({p["id"] for p in picked}) == 12 and len({p["text"] for p in picked}) == 12
    assert len({p["guess"]["uncertain_about"] for p in picked}) >= 8  # spread across labels
    model = load_model(hashing_workspace.models_dir)
    thresholds = dict(zip(model.labels, model.threshold_vector()))
    margins = []
    for p in picked:
        label = p["guess"]["uncertain_about"]
        margins.append(abs(p["guess"]["scores"][label] - thresholds[label]))
    all_margins = sorted(abs(r.scores[lb] - thresholds[lb]) for r in results
                         for lb in model.labels)
    assert sorted(margins)[len(margins) // 2] <= all_margins[len(all_margins) // 4]
    # the labelling loop: unreviewed lines are refused, reviewed ones validate
    labels = tmp_path / "labels"
    import shutil

    shutil.copytree(hashing_workspace.labels_dir, labels)
    shutil.copy(out, labels / "train" / "suggested.jsonl")
    problems = read_labels(labels).problems
    assert len(problems) == 12 and all("not been reviewed" in p for p in problems)
    reviewed = [{**p, "labels": p["guess"]["labels"]} for p in picked]
    (labels / "train" / "suggested.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in reviewed))
    assert read_labels(labels).problems == []
    # never over an existing file, and a short answer says why
    again = cli(hashing_workspace, "suggest", str(path), "--n", "5000", "-o", str(out))
    assert again.returncode == 1 and "exists" in again.stderr
    many = cli(hashing_workspace, "suggest", str(path), "--n", "5000", "-o",
               str(tmp_path / "many.jsonl"))
    assert many.returncode == 0 and "only " in many.stderr and "scanned" in many.stderr
