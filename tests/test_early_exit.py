"""The cascade's second stage (issue 13 item 5): an early exit inside the encoder, trained
with the model, stored as arrays and JSON, checked on load, and applied in-process and in
the service's batcher, where evidence sentences never stop at it."""

import asyncio
import json

import numpy as np
import pytest

from tropes.classifier import Classifier
from tropes.http.batching import MicroBatcher
from tropes.http.holder import ModelHolder
from tropes.training.artifact import ArtifactError, load_model
from tropes.training.early_exit import LAYER, RECALL_TARGET, fit_early_exit
from tropes.training.embeddings import HashingEncoder

from .test_cascade import AI, ORDINARY, CountingEncoder

TEXTS = ORDINARY + [AI, "The ship's computer told the captain the reactor was fine; it was "
                        "not, and it had known for a week."]


def classifier_with_exit(settings, threshold: float, encoder=None) -> Classifier:
    model = load_model(settings.models_dir, "v1")
    model.early_exit.threshold = threshold
    return Classifier(model, encoder or HashingEncoder())


def test_trained_model_carries_an_early_exit_that_round_trips(hashing_workspace):
    folder = hashing_workspace.models_dir / "v1"
    meta = json.loads((folder / "model.json").read_text())
    section = meta["early_exit"]
    assert section["layer"] == LAYER and section["file"] == "early_exit.npz"
    assert meta["files"]["early_exit.npz"] == section["sha256"]
    assert section["cv"]["recall_target"] == RECALL_TARGET
    assert section["cv"]["misaligned_recall"] >= RECALL_TARGET
    assert set(meta["metrics"]["early_exit"]["test"]) >= {"misaligned_recall_both_stages",
                                                         "ordinary_pass_rate_both_stages"}
    model = load_model(hashing_workspace.models_dir, "v1")
    with np.load(folder / "early_exit.npz", allow_pickle=False) as data:
        assert np.array_equal(data["coef"], model.early_exit.coef)
    assert model.early_exit.threshold == section["threshold"]


def test_passages_stopped_at_the_exit_are_marked_and_unlabelled(hashing_workspace):
    plain = Classifier(load_model(hashing_workspace.models_dir, "v1"), HashingEncoder(),
                       prefilter=False)
    keep_all = classifier_with_exit(hashing_workspace, 0.0)
    stop_all = classifier_with_exit(hashing_workspace, 1.1)  # beyond any probability
    passed = keep_all.screen(TEXTS)[0]
    assert passed.any(), "the prefilter should pass at least the AI passages"
    kept = keep_all.tag(TEXTS)
    stopped = stop_all.tag(TEXTS)
    full = plain.tag(TEXTS)
    for ok, k, s, f in zip(passed, kept, stopped, full):
        if ok:  # through the whole encoder: the head's answer; stopped: the exit's
            assert k.to_dict() == f.to_dict()
            assert s.extra.get("prefiltered") and s.labels == [] and s.portrayal == "none"
            assert all(v < t for v, t in zip(s.scores.values(), stop_all.thresholds))
        else:  # the prefilter's verdict comes first either way
            assert k.extra.get("prefiltered") and s.extra.get("prefiltered")


def test_texts_that_may_not_exit_go_through_the_whole_encoder(hashing_workspace):
    stop_all = classifier_with_exit(hashing_workspace, 1.1)
    may = np.array([True, False, True, False])
    scores, exited = stop_all.exit_scores(TEXTS, may)
    assert exited.tolist() == may.tolist()
    head = stop_all.head_scores(TEXTS)
    assert np.allclose(scores[~may], head[~may])
    assert (scores[may] < stop_all.cheap_caps + 1e-12).all()


def test_the_batcher_lets_passages_exit_but_never_evidence_sentences(hashing_workspace):
    holder = ModelHolder(hashing_workspace, encoder=HashingEncoder())
    holder.classifier.early_exit.threshold = 1.1

    async def run():
        batcher = MicroBatcher(holder)
        passages = await batcher.submit(TEXTS)
        sentences = await batcher.submit(TEXTS, follow_up=True)
        return passages, sentences

    (_, _, exited), (_, sentence_scores, sentence_exited) = asyncio.run(run())
    assert exited.all() and not sentence_exited.any()
    assert np.allclose(sentence_scores, holder.classifier.head_scores(TEXTS))


def test_no_prefilter_turns_the_exit_off_too(hashing_workspace):
    model = load_model(hashing_workspace.models_dir, "v1")
    model.early_exit.threshold = 1.1
    encoder = CountingEncoder()
    results = Classifier(model, encoder, prefilter=False).tag(TEXTS)
    assert not any("prefiltered" in r.extra for r in results)
    assert encoder.seen == TEXTS


@pytest.mark.parametrize("change, message", [
    (lambda m: m["early_exit"].update(layer="two"), "early_exit.layer"),
    (lambda m: m["early_exit"].update(dim=12), "early_exit.dim"),
    (lambda m: m["early_exit"].update(threshold=1.5), "early_exit.threshold"),
    (lambda m: m["early_exit"].update(kind="mlp"), "early_exit.kind"),
    (lambda m: m.update(format_version=3), "needs format_version 4"),
])
def test_a_bad_early_exit_section_is_refused(workspace, change, message):
    path = workspace.models_dir / "v1" / "model.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=message):
        load_model(workspace.models_dir, "v1")


def test_damaged_or_reshaped_early_exit_arrays_are_refused(workspace):
    folder = workspace.models_dir / "v1"
    path = folder / "early_exit.npz"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ArtifactError, match="early_exit.npz does not match its recorded"):
        load_model(workspace.models_dir, "v1")
    np.savez(path, coef=np.zeros(5, dtype=np.float32), intercept=np.zeros(1))
    meta = json.loads((folder / "model.json").read_text())
    from tropes.training.artifact import file_sha256

    meta["early_exit"]["sha256"] = meta["files"]["early_exit.npz"] = file_sha256(path)
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"early_exit.npz coef has shape \(5,\); expected"):
        load_model(workspace.models_dir, "v1")


def test_threshold_keeps_the_recall_target_on_rows_the_encoder_never_saw():
    rng = np.random.default_rng(3)
    n = 600
    y = rng.random(n) < 0.4
    features = rng.normal(size=(n, 16)) + y[:, None] * 0.8
    calibrate = rng.random(n) < 0.5
    stage = fit_early_exit(features, y, y, calibrate, ~y)
    kept = stage.keeps(features)
    assert kept[y & calibrate].mean() >= 0.98  # the refit whole model, near the OOF target
    assert stage.report["misaligned_recall"] >= RECALL_TARGET
    assert stage.report["calibration_rows"] == int(calibrate.sum())
    assert kept[~y].mean() < 0.9  # it does stop some of the negatives
    assert fit_early_exit(features, y, y, np.zeros(n, dtype=bool), ~y) is None
