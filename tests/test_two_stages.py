"""The encoder stage and the head stage: encoder versions, calibration on passages the
encoder never saw, group scores and the gate, and the model format (with a fixture)."""

import json
import shutil

import numpy as np
import pytest

from tropes.classifier import Classifier
from tropes.training.artifact import ArtifactError, load_model
from tropes.training.embeddings import HashingEncoder, check_encoder_matches
from tropes.training.encoder_store import (
    EncoderStoreError,
    held_out_of_finetuning,
    load_finetuned_state,
    read_encoder_record,
    seen_mask,
    text_sha256,
    write_encoder,
)
from tropes.training.labelset import read_labels
from tropes.training.train import choose_thresholds

from .conftest import REPO


def test_model_has_group_scores_and_every_label_passes_its_gate(hashing_workspace):
    model = load_model(hashing_workspace.models_dir)
    assert model.group_ids == ["misaligned", "aligned"]
    assert model.head.coef.shape[0] == len(model.labels) + 2
    texts = [p.text for p in read_labels(hashing_workspace.labels_dir).split("test")]
    classifier = Classifier(model, HashingEncoder())
    scores = classifier.scores(texts)
    for result, row in zip(classifier.results(scores), scores):
        assert set(result.group_scores) == {"misaligned", "aligned"}
        assert result.group_scores["misaligned"] == pytest.approx(row[len(model.labels)],
                                                                  abs=1e-4)
        if model.gate:
            for label in result.labels:
                g = model.group_ids.index(model.groups[model.labels.index(label)])
                assert row[len(model.labels) + g] >= model.group_threshold_vector()[g]


def test_gate_rule_drops_a_label_whose_group_is_below_threshold():
    model = load_model(REPO / "tests" / "fixtures" / "models")
    model.gate = True
    n = len(model.labels)
    scores = np.zeros((2, n + 2))
    scores[:, 0] = 0.99  # deception, a misaligned label, over its threshold
    scores[0, n] = 0.99  # misaligned group open
    scores[1, n] = 0.0  # misaligned group closed
    flags = model.present(scores)
    assert flags[0, 0] and not flags[1, 0]
    model.gate = False
    assert model.present(scores)[1, 0]


def test_thresholds_choose_gate_only_when_it_scores_better_on_calibration_rows():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 2)) < 0.3).astype(int)
    groups = np.stack([y[:, 0], y[:, 1]], axis=1)
    noise = rng.random((400, 2)) * 0.6
    probs = np.hstack([np.clip(y * 0.5 + noise, 0, 1), np.clip(groups * 0.6 + noise * 0.5, 0, 1)])
    chosen = choose_thresholds(probs, y, groups, [0, 1], None)
    assert set(chosen.choice) == {"plain_macro_f1", "gated_macro_f1"}
    assert chosen.gate == (chosen.choice["gated_macro_f1"] > chosen.choice["plain_macro_f1"])
    assert set(chosen.labels) == set(chosen.groups) == {"f1", "recall"}


def test_held_out_sixth_is_stable_by_content():
    texts = [f"passage number {i} about something" for i in range(600)]
    held = [held_out_of_finetuning(t) for t in texts]
    assert 60 < sum(held) < 140  # about one in six
    assert held == [held_out_of_finetuning(t) for t in texts]


def test_encoder_store_round_trip_and_hash_check(tmp_path):
    torch = pytest.importorskip("torch")
    module = torch.nn.Linear(3, 2)
    texts = ["a seen passage", "another seen one"]
    folder = write_encoder(tmp_path, "enc-test", [module], {"recipe": {"epochs": 1}},
                           [text_sha256(t) for t in texts])
    record = read_encoder_record(tmp_path, "enc-test")
    assert record["trained_on"]["count"] == 2 and record["recipe"] == {"epochs": 1}
    state = load_finetuned_state(tmp_path, "enc-test")
    assert torch.allclose(state["weight"], module.weight.detach().to(torch.bfloat16).float())
    assert seen_mask(texts + ["never seen"], record).tolist() == [True, True, False]
    assert not seen_mask(texts, None).any()  # the base encoder saw nothing
    with pytest.raises(EncoderStoreError, match="already exists"):
        write_encoder(tmp_path, "enc-test", [module], {}, [])
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(EncoderStoreError, match="sha256"):
        read_encoder_record(tmp_path, "enc-test")
    with pytest.raises(EncoderStoreError, match="not found"):
        read_encoder_record(tmp_path, "enc-missing")


def test_a_model_refuses_an_encoder_other_than_its_own(hashing_workspace):
    model = load_model(hashing_workspace.models_dir)
    other = HashingEncoder(dim=128)
    with pytest.raises(ArtifactError, match="dim"):
        check_encoder_matches(model, other)
    model.meta["encoder"]["weights_sha256"] = "0" * 64
    with pytest.raises(ArtifactError, match="weights_sha256"):
        Classifier(model, HashingEncoder())


def test_fixture_of_the_current_format_loads(tmp_path):
    """tests/fixtures/models holds one version in format 2 (no prefilter), written by tropes
    train with the hashing encoder; later formats must keep reading it (it then has no
    cascade)."""
    model = load_model(REPO / "tests" / "fixtures" / "models")
    meta = json.loads((REPO / "tests" / "fixtures" / "models" / model.version /
                       "model.json").read_text())
    assert meta["format_version"] == 2 and model.gate in (True, False)
    assert len(model.group_thresholds["f1"]) == 2 and model.prefilter is None
    broken = tmp_path / "models"
    shutil.copytree(REPO / "tests" / "fixtures" / "models", broken)
    path = broken / model.version / "model.json"
    meta["groups"][0]["thresholds"]["f1"] = "high"
    path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="thresholds"):
        load_model(broken)
