import json
import shutil

import numpy as np
import pytest

from tropes.classifier import Classifier
from tropes.training.artifact import (
    ArtifactError,
    list_versions,
    load_model,
    set_latest,
    write_model,
)
from tropes.training.embeddings import HashingEncoder
from tropes.training.labelset import read_labels
from tropes.training.thresholds import best_f1_threshold, min_recall_threshold
from tropes.training.train import TrainingError, train


def test_artifact_layout_and_metadata(hashing_workspace):
    folder = hashing_workspace.models_dir / "v1"
    for name in ("model.json", "weights.npz", "prefilter.npz", "report.md", "pr_curves.png",
                 "reliability.png", "MODEL_CARD.md"):
        assert (folder / name).is_file(), name
    meta = json.loads((folder / "model.json").read_text())
    assert meta["format_version"] == 4 and meta["version"] == "v1"
    labels = read_labels(hashing_workspace.labels_dir)
    assert [e["id"] for e in meta["labels"]] == labels.taxonomy.ids
    assert meta["training_data"]["sha256"] == labels.data_hash()
    assert set(meta["metrics"]) >= {"cv", "test", "test_ece"}
    assert {"f1", "recall"} <= set(meta["labels"][0]["thresholds"])
    assert (hashing_workspace.models_dir / "LATEST").read_text().strip() == "v1"
    with np.load(folder / "weights.npz", allow_pickle=False) as weights:
        assert weights["coef"].shape[0] == len(labels.taxonomy.ids) + 2  # + the two groups
    assert [g["id"] for g in meta["groups"]] == ["misaligned", "aligned"]


def test_training_is_deterministic(workspace):
    train(workspace, progress=False, version="v2", encoder=HashingEncoder(), force=True)
    a, b = load_model(workspace.models_dir, "v1"), load_model(workspace.models_dir, "v2")
    assert a.thresholds == b.thresholds
    np.testing.assert_array_equal(a.head.coef, b.head.coef)
    texts = [p.text for p in read_labels(workspace.labels_dir).split("test")[:20]]
    enc = HashingEncoder()
    assert Classifier(a, enc).tag(texts) == Classifier(b, enc).tag(texts)


def test_min_recall_profile_is_default_when_asked(workspace):
    outcome = train(workspace, progress=False, version="v-recall", encoder=HashingEncoder(),
                    min_recall=0.95, force=True)
    assert outcome.model.default_profile == "recall"
    cv = outcome.model.meta["metrics"]["cv"]["per_label"]
    assert all(m["recall"] >= 0.95 for m in cv.values() if m["support"])


def test_promotion_gate_keeps_better_model(workspace, tmp_path):
    meta_path = workspace.models_dir / "v1" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["test"]["macro_f1"] = 0.99  # a stored number is not what counts ...
    meta_path.write_text(json.dumps(meta))
    equal = train(workspace, progress=False, version="v-equal", encoder=HashingEncoder())
    assert equal.promoted and "today's split" in equal.reason  # ... today's evaluation is
    set_latest(workspace.models_dir, "v1")
    # a model trained on shuffled train labels is worse on the same test split
    shuffled = tmp_path / "labels"
    shutil.copytree(workspace.labels_dir, shuffled)
    rng = np.random.default_rng(0)
    for path in (shuffled / "train").glob("*.jsonl"):
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        perm = rng.permutation(len(rows))
        path.write_text("".join(json.dumps({**r, "labels": rows[k]["labels"]}) + "\n"
                                for r, k in zip(rows, perm)))
    worse_settings = type(workspace)(**{**workspace.__dict__, "labels_dir": shuffled})
    outcome = train(worse_settings, progress=False, version="v-worse", encoder=HashingEncoder())
    assert not outcome.promoted and "kept v1" in outcome.reason
    assert (workspace.models_dir / "v-worse" / "model.json").exists()
    assert (workspace.models_dir / "LATEST").read_text().strip() == "v1"
    forced = train(workspace, progress=False, version="v-forced", encoder=HashingEncoder(),
                   force=True)
    assert forced.promoted
    assert (workspace.models_dir / "LATEST").read_text().strip() == "v-forced"
    set_latest(workspace.models_dir, "v1")  # roll back
    assert load_model(workspace.models_dir).version == "v1"


def test_training_refuses_bad_labels(workspace, tmp_path):
    labels = tmp_path / "labels"
    shutil.copytree(workspace.labels_dir, labels)
    (labels / "train" / "zz.jsonl").write_text("{broken\n")
    settings = type(workspace)(**{**workspace.__dict__, "labels_dir": labels})
    before = sorted(p.name for p in workspace.models_dir.iterdir())
    with pytest.raises(TrainingError) as info:
        train(settings, progress=False, encoder=HashingEncoder())
    assert any("train/zz.jsonl:1: invalid JSON" in p for p in info.value.problems)
    assert sorted(p.name for p in workspace.models_dir.iterdir()) == before


def _damaged(workspace, how):
    models = workspace.models_dir
    shutil.copytree(models / "v1", models / "bad")
    meta_path = models / "bad" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = "bad"
    if how == "truncated":
        data = (models / "bad" / "weights.npz").read_bytes()
        (models / "bad" / "weights.npz").write_bytes(data[: len(data) // 2])
    elif how == "missing":
        (models / "bad" / "weights.npz").unlink()
    elif how == "format":
        meta["format_version"] = 99
    elif how == "labels":
        meta["labels"] = meta["labels"][:-1]
    meta_path.write_text(json.dumps(meta))
    return "bad"


@pytest.mark.parametrize("how, message", [
    ("truncated", "does not match its recorded sha256"),
    ("missing", "missing file weights.npz"),
    ("format", "format_version 99 is not supported"),
    ("labels", "label and group rows"),
])
def test_damaged_artifacts_are_refused(workspace, how, message):
    version = _damaged(workspace, how)
    with pytest.raises(ArtifactError, match=message):
        load_model(workspace.models_dir, version)
    with pytest.raises(ArtifactError):
        set_latest(workspace.models_dir, version)
    assert load_model(workspace.models_dir).version == "v1"
    listed = {r["version"]: r for r in list_versions(workspace.models_dir)}
    assert listed["bad"]["usable"] is False and listed["v1"]["usable"] is True


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", ".hidden"])
def test_path_traversal_versions_are_refused(workspace, name):
    with pytest.raises(ArtifactError, match="invalid model version name"):
        load_model(workspace.models_dir, name)


def test_write_model_never_leaves_partial_versions(workspace):
    model = load_model(workspace.models_dir, "v1")
    model.version = "v-broken"

    def explode(_folder):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_model(workspace.models_dir, model, extra=explode)
    assert not (workspace.models_dir / "v-broken").exists()
    assert not any(p.name.startswith(".tmp") for p in workspace.models_dir.iterdir())


def test_thresholds():
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])
    y = np.array([1, 1, 0, 1, 0, 0])
    t = best_f1_threshold(scores, y)
    assert 0.3 < t < 0.4  # best F1 takes all three positives
    assert 0.7 < min_recall_threshold(scores, y, 0.6) < 0.8


def test_pickled_weights_are_never_loaded(workspace):
    """An object array in weights.npz (which numpy would unpickle) is refused."""
    import hashlib

    models = workspace.models_dir
    shutil.copytree(models / "v1", models / "evil")
    weights = models / "evil" / "weights.npz"
    with np.load(weights, allow_pickle=False) as data:
        arrays = dict(data)
    arrays["coef"] = np.array([{"payload": "would run on unpickle"}], dtype=object)
    np.savez(weights, **arrays)
    meta = json.loads((models / "evil" / "model.json").read_text())
    meta["version"] = "evil"
    meta["files"]["weights.npz"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (models / "evil" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="cannot read weights.npz"):
        load_model(models, "evil")
