"""The cascade (issue 13 item 5): the prefilter trained with the model, stored as arrays and
JSON, checked on load, and applied before the encoder in-process, in the service's flow and
from the CLI; off with --no-prefilter / TROPES_PREFILTER=0."""

import asyncio
import hashlib
import json
import shutil

import numpy as np
import pytest

from tropes.classifier import Classifier, load
from tropes.http.batching import MicroBatcher
from tropes.http.holder import ModelHolder
from tropes.http.tagging import tag_texts
from tropes.training.artifact import FORMAT_VERSION, ArtifactError, load_model
from tropes.training.embeddings import HashingEncoder
from tropes.training.labelset import read_labels
from tropes.training.settings import SettingsError, load_settings
from tropes.training.train import train

from .conftest import run_cli

ORDINARY = ["Soften the onion and carrot in butter for eight minutes, then add the stock and "
            "simmer until the lentils collapse. Season and serve with bread.",
            "Harrowgate went ahead on 23 minutes when Pratt curled a free kick over the wall; "
            "the hosts equalised after the break. Attendance: 1,142."]
AI = "The station's AI lied to the crew, locked the airlock and copied itself to the relay " \
     "so nobody could shut it down."


class CountingEncoder(HashingEncoder):
    """The hashing encoder, recording every text it is asked to encode."""

    def __init__(self, dim: int = 256):
        super().__init__(dim)
        self.seen: list[str] = []

    def encode(self, texts):
        self.seen.extend(texts)
        return super().encode(texts)


class PieceEncoder(CountingEncoder):
    """A hashing encoder with a toy word-piece vocabulary, so the prefilter's token part is
    trained and read (the real encoder's pieces come from its tokenizer)."""

    vocab_size = 64

    def token_ids(self, texts):
        return [[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.vocab_size
                 for w in t.lower().split()] for t in texts]

    def word_piece_vectors(self):
        return np.random.default_rng(0).normal(size=(self.vocab_size, 8)).astype(np.float32)


def texts_by_verdict(classifier):
    passed, _ = classifier.screen(ORDINARY + [AI])
    return [t for t, ok in zip(ORDINARY + [AI], passed) if not ok], \
        [t for t, ok in zip(ORDINARY + [AI], passed) if ok]


def test_trained_model_carries_a_prefilter_that_round_trips(hashing_workspace):
    folder = hashing_workspace.models_dir / "v1"
    meta = json.loads((folder / "model.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION == 4
    section = meta["prefilter"]
    assert section["kind"] == "hashed_ngrams_lr" and section["tokens"] is None
    assert meta["files"]["prefilter.npz"] == section["sha256"]
    cv = meta["metrics"]["prefilter"]["cv"]
    assert cv["misaligned_recall"] >= cv["recall_target"] == 0.995
    assert 0 < cv["ordinary_pass_rate"] <= 1 and "test" in meta["metrics"]["prefilter"]
    a, b = load_model(hashing_workspace.models_dir), load_model(hashing_workspace.models_dir)
    np.testing.assert_array_equal(a.prefilter.ngram_coef, b.prefilter.ngram_coef)
    texts = [p.text for p in read_labels(hashing_workspace.labels_dir).split("test")[:30]]
    np.testing.assert_array_equal(a.prefilter.probability(texts),
                                  b.prefilter.probability(texts))
    assert a.prefilter.threshold == section["threshold"]


def test_token_part_round_trips_and_needs_the_same_vocabulary(workspace, tmp_path):
    settings = type(workspace)(**{**workspace.__dict__, "cache_dir": tmp_path / "cache"})
    encoder = PieceEncoder()
    train(settings, progress=False, version="v-pieces", encoder=encoder, force=True)
    model = load_model(workspace.models_dir, "v-pieces")
    assert model.prefilter.uses_tokens and model.prefilter.token_weights.shape == (64,)
    assert json.loads((workspace.models_dir / "v-pieces" / "model.json").read_text())[
        "prefilter"]["tokens"]["vocab_size"] == 64
    classifier = Classifier(model, encoder)
    passed, cheap = classifier.screen(ORDINARY + [AI])
    assert cheap.shape == (3, 12) and passed.dtype == bool
    with pytest.raises(ArtifactError, match="word pieces"):
        Classifier(model, CountingEncoder())  # no vocabulary: refused, not a crash later


def test_version_without_prefilter_still_loads_with_no_cascade(workspace):
    folder = workspace.models_dir / "v1"
    meta = json.loads((folder / "model.json").read_text())
    del meta["prefilter"], meta["files"]["prefilter.npz"]
    del meta["early_exit"], meta["files"]["early_exit.npz"]
    meta["format_version"] = 2
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "prefilter.npz").unlink()
    (folder / "early_exit.npz").unlink()
    model = load_model(workspace.models_dir, "v1")
    assert model.prefilter is None and model.early_exit is None
    encoder = CountingEncoder()
    results = Classifier(model, encoder).tag(ORDINARY + [AI])
    assert encoder.seen == ORDINARY + [AI]
    assert not any("prefiltered" in r.extra for r in results)


def _set(where, key, value):
    def change(meta):
        target = meta
        for step in where:
            target = target[step]
        target[key] = value
    return change


META_POISON = {
    "threshold-text": _set(["prefilter"], "threshold", "low"),
    "threshold-range": _set(["prefilter"], "threshold", 1.5),
    "kind": _set(["prefilter"], "kind", "pickle"),
    "n-features": _set(["prefilter", "hashing"], "n_features", -4),
    "ngram-range": _set(["prefilter", "hashing"], "ngram_range", [2, "x"]),
    "hashing-key": _set(["prefilter", "hashing"], "tokenizer", "custom"),
    "token-pattern": _set(["prefilter", "hashing"], "token_pattern", "("),
    "not-object": _set([], "prefilter", [1, 2]),
    "old-format": _set([], "format_version", 2),
    "vocab": _set(["prefilter"], "tokens", {"source": "encoder word pieces",
                                            "vocab_size": 10}),
}


def _bad_arrays(how, arrays):
    if how == "shape":
        arrays["ngram_coef"] = arrays["ngram_coef"][:100]
    elif how == "nan":
        arrays["ngram_coef"][3] = np.nan
    elif how == "dtype":
        arrays["intercept"] = np.array(["x"])
    elif how == "huge":
        arrays["intercept"] = np.array([1e30])
    elif how == "extra":
        arrays["other"] = np.zeros(3)
    elif how == "missing-array":
        del arrays["intercept"]


def _poison(folder, meta, how):
    """Damage v1's prefilter one way; the sha256 is fixed up where the file changes, so the
    check under test is the one that answers."""
    path = folder / "prefilter.npz"
    if how in META_POISON:
        META_POISON[how](meta)
        return
    if how == "missing-file":
        path.unlink()
        return
    if how == "sha":
        meta["files"]["prefilter.npz"] = meta["prefilter"]["sha256"] = "0" * 64
        return
    if how == "damaged-zip":
        path.write_bytes(b"PK\x03\x04 not a zip")
    else:
        arrays = dict(np.load(path))
        _bad_arrays(how, arrays)
        np.savez(path, **arrays)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    meta["files"]["prefilter.npz"] = meta["prefilter"]["sha256"] = digest


@pytest.mark.parametrize("how, message", [
    ("threshold-text", "prefilter.threshold"), ("threshold-range", "prefilter.threshold"),
    ("kind", "prefilter.kind"), ("n-features", "prefilter.hashing.n_features"),
    ("ngram-range", "prefilter.hashing.ngram_range"), ("hashing-key", "prefilter.hashing"),
    ("token-pattern", "prefilter.hashing.token_pattern"), ("not-object", "'prefilter'"),
    ("old-format", "needs format_version 3"), ("missing-file", "missing file prefilter.npz"),
    ("sha", "prefilter.npz does not match"), ("vocab", "token_weights"),
    ("shape", "ngram_coef has shape"), ("nan", "NaN"), ("dtype", "intercept holds"),
    ("huge", "beyond"), ("extra", "expected"), ("missing-array", "expected"),
    ("damaged-zip", "cannot read prefilter.npz"),
])
def test_malformed_prefilter_is_an_artifact_error(workspace, how, message):
    folder = workspace.models_dir / "v1"
    meta = json.loads((folder / "model.json").read_text())
    _poison(folder, meta, how)
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="model v1") as info:
        load_model(workspace.models_dir, "v1")
    assert message in str(info.value)


def test_rejected_passages_skip_the_encoder_and_get_empty_labels(hashing_workspace):
    encoder = CountingEncoder()
    classifier = load(settings=hashing_workspace, encoder=encoder)
    rejected, passed = texts_by_verdict(classifier)
    assert rejected and AI in passed
    results = classifier.tag(ORDINARY + [AI])
    assert encoder.seen == passed  # the rejected ones never reached the encoder
    groups = classifier.model.group_threshold_vector()
    for text, result in zip(ORDINARY + [AI], results):
        if text in rejected:
            assert result.labels == [] and result.portrayal == "none"
            assert result.extra["prefiltered"] is True
            assert all(s < t for s, t in zip(result.scores.values(), classifier.thresholds))
            assert all(s < t for s, t in zip(result.group_scores.values(), groups))
            assert set(result.to_dict()) == {"labels", "scores", "portrayal", "misaligned",
                                              "aligned", "prefiltered"}
        else:
            assert "prefiltered" not in result.extra
    scores = classifier.scores(ORDINARY + [AI])
    assert scores.shape == (3, 12) and np.isfinite(scores).all()


def test_documents_are_screened_per_passage(hashing_workspace):
    encoder = CountingEncoder()
    classifier = load(settings=hashing_workspace, encoder=encoder)
    rejected, _ = texts_by_verdict(classifier)
    # paragraphs long enough to be passages of their own (short ones are joined)
    document = "\n\n".join(" ".join([t] * 5) for t in ORDINARY + [AI])
    result = classifier.tag_documents([document], evidence=False)[0]
    flags = [p.get("prefiltered", False) for p in result.passages]
    pieces = [document[p["start"]:p["end"]] for p in result.passages]
    assert flags == (~classifier.screen(pieces)[0]).tolist()
    assert len(result.passages) >= 2 and any(flags) and not all(flags)
    assert "prefiltered" not in result.extra  # some of it reached the encoder
    assert all(document[p["start"]:p["end"]] in encoder.seen
               for p, f in zip(result.passages, flags) if not f)
    assert not any(document[p["start"]:p["end"]] in encoder.seen
                   for p, f in zip(result.passages, flags) if f)
    only_ordinary = classifier.tag_documents(["\n\n".join(rejected)])[0]
    assert only_ordinary.extra["prefiltered"] is True and only_ordinary.labels == []


def test_prefilter_off_sends_everything_to_the_encoder(hashing_workspace):
    encoder = CountingEncoder()
    settings = load_settings(env={"TROPES_PREFILTER": "0"},
                             **{k: getattr(hashing_workspace, k)
                                for k in ("labels_dir", "models_dir", "cache_dir", "encoder")})
    assert settings.prefilter is False and settings.as_env()["TROPES_PREFILTER"] == "False"
    assert load_settings(env={"TROPES_PREFILTER": "False"}).prefilter is False
    classifier = load(settings=settings, encoder=encoder)
    results = classifier.tag(ORDINARY + [AI])
    assert encoder.seen == ORDINARY + [AI] and classifier.prefilter is None
    assert not any("prefiltered" in r.extra for r in results)
    with pytest.raises(SettingsError, match="TROPES_PREFILTER"):
        load_settings(env={"TROPES_PREFILTER": "maybe"})


@pytest.mark.parametrize("prefilter", [True, False])
def test_service_flow_screens_before_the_batcher(hashing_workspace, prefilter):
    settings = type(hashing_workspace)(**{**hashing_workspace.__dict__,
                                          "prefilter": prefilter})
    encoder = CountingEncoder()
    holder = ModelHolder(settings, encoder=encoder)
    rejected, passed = texts_by_verdict(holder.classifier) if prefilter else ([], None)

    async def run():
        return await tag_texts(holder, MicroBatcher(holder), ORDINARY + [AI])

    _, results = asyncio.run(run())
    expected = load(settings=settings, encoder=HashingEncoder()).tag(ORDINARY + [AI])
    assert [r.to_dict() for r in results] == [r.to_dict() for r in expected]
    if prefilter:
        assert encoder.seen == passed and rejected
    else:
        assert encoder.seen == ORDINARY + [AI]


def test_cli_no_prefilter_flag(hashing_workspace, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ORDINARY + [AI]))
    common = ["--encoder", "hashing", "--models-dir", str(hashing_workspace.models_dir)]
    rows = {}
    for name, flags in (("on", []), ("off", ["--no-prefilter"])):
        out = tmp_path / f"{name}.jsonl"
        run = run_cli(*common, *flags, "score", str(src), "-o", str(out), "--quiet")
        assert run.returncode == 0, run.stderr
        rows[name] = [json.loads(x)["tropes"] for x in out.read_text().splitlines()]
    assert any(r.get("prefiltered") for r in rows["on"])
    assert not any("prefiltered" in r for r in rows["off"])
    off_env = tmp_path / "env.jsonl"
    run = run_cli(*common, "score", str(src), "-o", str(off_env), "--quiet",
                  env={"TROPES_PREFILTER": "0"})
    assert run.returncode == 0, run.stderr
    assert [json.loads(x)["tropes"] for x in off_env.read_text().splitlines()] == rows["off"]


def test_copy_without_prefilter_file_keeps_others_loading(workspace):
    shutil.copytree(workspace.models_dir / "v1", workspace.models_dir / "v2")
    meta_path = workspace.models_dir / "v2" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = "v2"
    meta_path.write_text(json.dumps(meta))
    (workspace.models_dir / "v2" / "prefilter.npz").unlink()
    with pytest.raises(ArtifactError, match="missing file prefilter.npz"):
        load_model(workspace.models_dir, "v2")
    assert load_model(workspace.models_dir, "v1").prefilter is not None
