"""labels/ -> embeddings -> head -> thresholds -> artifact, with a promotion gate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from .artifact import ArtifactError, Model, load_model, new_version_id, set_latest, write_model
from .embeddings import embed_with_cache, load_encoder
from .errors import TropesError
from .features import build_features, prototype_sentences
from .head import fit_head
from .labelset import read_labels
from .metrics import evaluate
from .report import expected_calibration_error, write_report
from .settings import Settings
from .thresholds import pick_thresholds

RECALL_PROFILE_TARGET = 0.9
PROMOTION_TOLERANCE = 0.02


class TrainingError(TropesError):
    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


@dataclass
class TrainOutcome:
    model: Model
    promoted: bool
    reason: str
    newly_embedded: int


def train(settings: Settings, min_recall: float | None = None, force: bool = False,
          progress: bool = True, version: str | None = None, encoder=None,
          use_cache: bool = True) -> TrainOutcome:
    """Embeddings differ in the last bits with batch composition, so a cache filled by
    earlier runs can move thresholds slightly; use_cache=False reproduces a clean build."""
    labels = read_labels(settings.labels_dir)
    if labels.problems:
        raise TrainingError(f"labels/ has {len(labels.problems)} problem(s); fix them first",
                            labels.problems)
    taxonomy = labels.taxonomy
    encoder = encoder or load_encoder(settings.encoder, settings.precision, settings.batch_size)
    train_texts, y_train = labels.matrix("train")
    test_texts, y_test = labels.matrix("test")
    protos = prototype_sentences(taxonomy)
    vectors, fresh = embed_with_cache(encoder, train_texts + test_texts + protos,
                                      settings.cache_dir if use_cache else None,
                                      progress=progress)
    n_train, n_test = len(train_texts), len(test_texts)
    prototypes = vectors[n_train + n_test:]
    x_train = build_features(vectors[:n_train], prototypes)
    x_test = build_features(vectors[n_train:n_train + n_test], prototypes)

    head, oof_probs, search = fit_head(x_train, y_train, progress=progress)
    thresholds = {
        "f1": pick_thresholds(oof_probs, y_train),
        "recall": pick_thresholds(oof_probs, y_train, min_recall or RECALL_PROFILE_TARGET),
    }
    profile = "recall" if min_recall is not None else "f1"
    cut = np.asarray(thresholds[profile])
    test_probs = head.predict_proba(x_test)
    metrics = {
        "cv": evaluate(taxonomy, y_train, oof_probs >= cut),
        "test": evaluate(taxonomy, y_test, test_probs >= cut),
        "test_ece": round(expected_calibration_error(y_test, test_probs), 4),
    }
    meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "encoder": encoder.describe(),
        "training_data": {"sha256": labels.data_hash(), "train": n_train, "test": n_test},
        "params": {"search": search, "features": "embedding + prototype cosine",
                   "prototypes": len(protos),
                   "recall_profile_target": min_recall or RECALL_PROFILE_TARGET},
        "metrics": metrics,
    }
    model = Model(version=version or new_version_id(), labels=taxonomy.ids,
                  groups=[lb.group for lb in taxonomy.labels], head=head,
                  prototypes=prototypes, thresholds=thresholds, default_profile=profile,
                  meta=meta)
    model.meta["version"] = model.version
    model.meta["threshold_profile"] = profile
    write_model(settings.models_dir, model,
                extra=lambda folder: write_report(folder, model.meta, taxonomy.ids, y_test,
                                                  test_probs, cut))
    promoted, reason = _promotion(settings, model, force)
    if promoted:
        set_latest(settings.models_dir, model.version)
    return TrainOutcome(model=model, promoted=promoted, reason=reason, newly_embedded=fresh)


def _promotion(settings: Settings, model: Model, force: bool) -> tuple[bool, str]:
    new = model.meta["metrics"]["test"]["macro_f1"]
    try:
        current = load_model(settings.models_dir)
    except ArtifactError:
        return True, "no usable current model"
    old = current.meta.get("metrics", {}).get("test", {}).get("macro_f1", 0.0)
    if new < old - PROMOTION_TOLERANCE and not force:
        return False, (f"test macro-F1 {new:.3f} is more than {PROMOTION_TOLERANCE} below "
                       f"{current.version}'s {old:.3f}; kept {current.version} (use --force)")
    return True, f"test macro-F1 {new:.3f} vs {current.version}'s {old:.3f}"
