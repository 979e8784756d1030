"""labels/ -> (optionally a fine-tuned encoder version) -> embeddings -> head -> thresholds
-> model version, with a promotion gate.

Two stages. `finetune=True` first fine-tunes the encoder on labels/train less a sixth held
out by text hash, and writes it as an encoder version (slow on a CPU). Every run then fits
the head on the chosen encoder's embeddings: by default the encoder the current model uses,
so adding passages and retraining takes seconds. Calibration and thresholds come only from
out-of-fold scores of passages the encoder never trained on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .artifact import ArtifactError, Model, load_model, new_version_id, set_latest, write_model
from .early_exit import LAYER as EXIT_LAYER
from .early_exit import EarlyExit, fit_early_exit
from .embeddings import embed_with_cache, encoder_for_model, load_encoder, resolve_precision
from .encoder_store import list_encoders, read_encoder_record, seen_mask
from .errors import TropesError
from .features import build_features, prototype_sentences
from .finetune import FinetuneConfig, finetune_encoder, group_targets
from .head import fit_head
from .labelset import read_labels
from .metrics import evaluate
from .model_card import write_model_card
from .prefilter import ORDINARY_FILES, Prefilter, fit_prefilter, static_token_vectors
from .report import expected_calibration_error, write_report
from .settings import Settings
from .thresholds import pick_gated_thresholds, pick_thresholds

RECALL_PROFILE_TARGET = 0.9
PROMOTION_TOLERANCE = 0.02
GROUP_IDS = ("misaligned", "aligned")


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


def current_encoder_version(settings: Settings) -> str | None:
    """The fine-tuned encoder the LATEST model uses (else the newest stored one, else None:
    the base encoder)."""
    try:
        recorded = load_model(settings.models_dir).meta.get("encoder") or {}
        return recorded.get("encoder_version")
    except ArtifactError:
        versions = list_encoders(settings.models_dir)
        return versions[-1] if versions else None


def new_encoder_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("enc-%Y%m%d-%H%M%S")


@dataclass
class Thresholds:
    labels: dict[str, list[float]]
    groups: dict[str, list[float]]
    gate: bool
    choice: dict


def choose_thresholds(probs: np.ndarray, y: np.ndarray, y_groups: np.ndarray,
                      label_group: list[int], min_recall: float | None) -> Thresholds:
    """Per-label thresholds with and without the group gate, on calibration rows; the rule
    with the higher macro-F1 there is kept (chosen on train only)."""
    n = y.shape[1]
    label_probs, group_probs = probs[:, :n], probs[:, n:]
    recall = min_recall or RECALL_PROFILE_TARGET
    plain = {"f1": pick_thresholds(label_probs, y),
             "recall": pick_thresholds(label_probs, y, recall)}
    groups = {"f1": pick_thresholds(group_probs, y_groups),
              "recall": pick_thresholds(group_probs, y_groups, recall)}
    gated_f1, gated_groups_f1 = pick_gated_thresholds(label_probs, y, group_probs, y_groups,
                                                      label_group)
    # the recall profile is for filtering: its gate stays open (threshold 0), so each label
    # reaches its recall target on its own scores
    gated_recall = plain["recall"]
    gated_groups_recall = [0.0] * y_groups.shape[1]

    def macro_f1(pred):
        tp = (pred & (y == 1)).sum(0)
        return float(np.mean(2 * tp / np.maximum(pred.sum(0) + y.sum(0), 1)))

    plain_score = macro_f1(label_probs >= np.asarray(plain["f1"]))
    open_gate = group_probs >= np.asarray(gated_groups_f1)
    gated_score = macro_f1((label_probs >= np.asarray(gated_f1)) & open_gate[:, label_group])
    choice = {"plain_macro_f1": round(plain_score, 4), "gated_macro_f1": round(gated_score, 4)}
    if gated_score > plain_score:
        return Thresholds({"f1": gated_f1, "recall": gated_recall},
                          {"f1": gated_groups_f1, "recall": gated_groups_recall}, True, choice)
    return Thresholds(plain, groups, False, choice)


def train(settings: Settings, min_recall: float | None = None, force: bool = False,
          progress: bool = True, version: str | None = None, encoder=None,
          use_cache: bool = True, finetune: bool = False,
          finetune_config: FinetuneConfig | None = None,
          encoder_version: str | None = None) -> TrainOutcome:
    """Embeddings differ in the last bits with batch composition, so a cache filled by
    earlier runs can move thresholds slightly; use_cache=False reproduces a clean build."""
    labels = read_labels(settings.labels_dir)
    if labels.problems:
        raise TrainingError(f"labels/ has {len(labels.problems)} problem(s); fix them first",
                            labels.problems)
    taxonomy = labels.taxonomy
    precision = resolve_precision(settings.precision)
    if encoder is None:
        if finetune:
            encoder_version = finetune_encoder(
                labels, settings.models_dir, new_encoder_id(), finetune_config,
                use_bf16=precision == "bf16" or settings.device.startswith("cuda"),
                device=settings.device, progress=progress)
        elif encoder_version is None:
            encoder_version = current_encoder_version(settings)
        encoder = load_encoder(settings.encoder, precision, settings.batch_size,
                               encoder_version=encoder_version, models_dir=settings.models_dir,
                               device=settings.device)
    record = read_encoder_record(settings.models_dir, encoder_version) if encoder_version \
        else None
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

    groups = [lb.group for lb in taxonomy.labels]
    label_group = [GROUP_IDS.index(g) for g in groups]
    g_train, g_test = group_targets(y_train, groups), group_targets(y_test, groups)
    calibrate = ~seen_mask(train_texts, record)
    head, oof_probs, search = fit_head(np.asarray(x_train), np.hstack([y_train, g_train]),
                                       progress=progress, calibrate_rows=calibrate)
    chosen = choose_thresholds(oof_probs[calibrate], y_train[calibrate], g_train[calibrate],
                               label_group, min_recall)
    profile = "recall" if min_recall is not None else "f1"
    model = Model(version=version or new_version_id(), labels=taxonomy.ids, groups=groups,
                  head=head, prototypes=prototypes, thresholds=chosen.labels,
                  default_profile=profile, group_ids=list(GROUP_IDS),
                  group_thresholds=chosen.groups, gate=chosen.gate)
    model.prefilter = train_prefilter(labels, encoder, groups, settings.cache_dir if use_cache
                                      else None)
    model.early_exit = train_early_exit(labels, encoder, groups, calibrate,
                                        settings.cache_dir if use_cache else None, progress)
    test_scores = head.predict_proba(x_test)
    metrics = {
        "cv": evaluate(taxonomy, y_train[calibrate], model.present(oof_probs[calibrate])),
        "test": evaluate(taxonomy, y_test, model.present(test_scores)),
        "test_ece": round(expected_calibration_error(y_test, test_scores[:, :n_labels(model)]),
                          4),
        "test_group_ece": round(expected_calibration_error(
            g_test, test_scores[:, n_labels(model):]), 4),
        "prefilter": {"cv": model.prefilter.report,
                      "test": prefilter_test(model.prefilter, encoder, labels, groups)},
    }
    if model.early_exit is not None:
        metrics["early_exit"] = {"cv": model.early_exit.report, "test": early_exit_test(
            model, encoder, labels, groups, settings.cache_dir if use_cache else None)}
    model.meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "encoder": encoder.describe(),
        "training_data": {"sha256": labels.data_hash(), "train": n_train, "test": n_test,
                          "calibration_rows": int(calibrate.sum())},
        "params": {"search": search, "features": "embedding + prototype cosine",
                   "prototypes": len(protos), "gate": chosen.gate,
                   "threshold_choice": chosen.choice,
                   "recall_profile_target": min_recall or RECALL_PROFILE_TARGET},
        "metrics": metrics,
        "version": model.version,
        "threshold_profile": profile,
    }
    cut = model.threshold_vector()

    def extras(folder):
        write_report(folder, model.meta, taxonomy.ids, y_test, test_scores[:, :len(cut)], cut)
        write_model_card(folder, model.meta)

    write_model(settings.models_dir, model, extra=extras)
    promoted, reason = _promotion(settings, model, encoder, test_texts, y_test, taxonomy,
                                  x_test, force)
    if promoted:
        set_latest(settings.models_dir, model.version)
    return TrainOutcome(model=model, promoted=promoted, reason=reason, newly_embedded=fresh)


def _prefilter_targets(passages, taxonomy_groups: list[str], ids: list[str]):
    misaligned = {label for label, g in zip(ids, taxonomy_groups) if g == "misaligned"}
    y_any = np.array([bool(p.labels) for p in passages])
    y_mis = np.array([bool(misaligned & set(p.labels)) for p in passages])
    ordinary = np.array([Path(p.file).stem in ORDINARY_FILES and not p.labels
                         for p in passages])
    return y_any, y_mis, ordinary


def _token_ids(encoder, texts, pieces):
    return encoder.token_ids(texts) if pieces is not None else None


def train_prefilter(labels, encoder, groups: list[str], cache_dir) -> Prefilter:
    """The cascade's first stage, from labels/train only (tropes.training.prefilter)."""
    passages = labels.split("train")
    texts = [p.text for p in passages]
    y_any, y_mis, ordinary = _prefilter_targets(passages, groups, labels.taxonomy.ids)
    pieces = static_token_vectors(encoder, cache_dir)
    return fit_prefilter(texts, y_any, y_mis, ordinary, _token_ids(encoder, texts, pieces),
                         pieces)


def prefilter_test(prefilter: Prefilter, encoder, labels, groups: list[str]) -> dict:
    """Reported only (the threshold came from train): what it passes of labels/test."""
    passages = labels.split("test")
    if not passages:
        return {}
    texts = [p.text for p in passages]
    y_any, y_mis, ordinary = _prefilter_targets(passages, groups, labels.taxonomy.ids)
    ids = encoder.token_ids(texts) if prefilter.uses_tokens else None
    passed = prefilter.probability(texts, ids) >= prefilter.threshold

    def share(mask):
        return round(float(passed[mask].mean()), 4) if mask.any() else None

    return {"n": len(texts), "misaligned_recall": share(y_mis), "any_label_recall":
            share(y_any), "ordinary_passages": int(ordinary.sum()),
            "ordinary_pass_rate": share(ordinary), "negative_pass_rate": share(~y_any)}


class LayerFeatures:
    """embed_with_cache's view of an encoder's layer-k mean hidden states (cached by text
    under the encoder's key and the layer)."""

    def __init__(self, encoder, layer: int):
        self.encoder, self.layer = encoder, layer
        self.key = f"{encoder.key}-layer{layer}"

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encoder.layer_features(texts, self.layer)


def train_early_exit(labels, encoder, groups: list[str], calibrate: np.ndarray, cache_dir,
                     progress: bool = False) -> EarlyExit | None:
    """The cascade's second stage (tropes.training.early_exit), from labels/train only; None
    for an encoder without layers to exit after."""
    if not hasattr(encoder, "layer_features") or encoder.n_layers <= EXIT_LAYER:
        return None
    passages = labels.split("train")
    features, _ = embed_with_cache(LayerFeatures(encoder, EXIT_LAYER),
                                   [p.text for p in passages], cache_dir, progress=progress)
    y_any, y_mis, ordinary = _prefilter_targets(passages, groups, labels.taxonomy.ids)
    return fit_early_exit(features, y_any, y_mis, calibrate, ordinary)


def early_exit_test(model: Model, encoder, labels, groups: list[str], cache_dir) -> dict:
    """Reported only: what the second stage passes of labels/test, alone and behind the
    prefilter."""
    passages = labels.split("test")
    if not passages:
        return {}
    texts = [p.text for p in passages]
    y_any, y_mis, ordinary = _prefilter_targets(passages, groups, labels.taxonomy.ids)
    features, _ = embed_with_cache(LayerFeatures(encoder, model.early_exit.layer), texts,
                                   cache_dir)
    alone = model.early_exit.keeps(features)
    both = alone.copy()
    if model.prefilter is not None:
        ids = encoder.token_ids(texts) if model.prefilter.uses_tokens else None
        both &= model.prefilter.probability(texts, ids) >= model.prefilter.threshold

    def share(flags, mask):
        return round(float(flags[mask].mean()), 4) if mask.any() else None

    return {"n": len(texts), "misaligned_recall": share(alone, y_mis),
            "misaligned_recall_both_stages": share(both, y_mis),
            "ordinary_passages": int(ordinary.sum()),
            "ordinary_pass_rate": share(alone, ordinary),
            "ordinary_pass_rate_both_stages": share(both, ordinary),
            "negative_pass_rate_both_stages": share(both, ~y_any)}


def n_labels(model: Model) -> int:
    return len(model.labels)


def _promotion(settings: Settings, model: Model, encoder, test_texts, y_test, taxonomy,
               x_test_new, force: bool) -> tuple[bool, str]:
    """Compare with the current model evaluated on today's test split (not the number it
    stored, which came from an older split)."""
    new = model.meta["metrics"]["test"]["macro_f1"]
    try:
        current = load_model(settings.models_dir)
    except ArtifactError:
        return True, "no usable current model"
    if current.labels != model.labels:
        if force:
            return True, f"label set differs from {current.version}'s; promoted by --force"
        return False, (f"the label set differs from {current.version}'s, so the two are not "
                       "comparable; kept it (use --force)")
    same_encoder = (current.meta.get("encoder") or {}).get("weights_sha256") == \
        encoder.describe().get("weights_sha256")
    if same_encoder:
        x_test = x_test_new[:, :encoder.dim]
    else:
        try:
            other = encoder_for_model(current, settings)
        except ArtifactError as exc:
            return True, f"{current.version}'s encoder cannot be loaded ({exc})"
        x_test, _ = embed_with_cache(other, test_texts, settings.cache_dir)
    scores = current.head.predict_proba(build_features(x_test, current.prototypes))
    old = evaluate(taxonomy, y_test, current.present(scores))["macro_f1"]
    if new < old - PROMOTION_TOLERANCE and not force:
        return False, (f"test macro-F1 {new:.3f} is more than {PROMOTION_TOLERANCE} below "
                       f"{current.version}'s {old:.3f} on today's test split; kept "
                       f"{current.version} (use --force)")
    return True, f"test macro-F1 {new:.3f} vs {current.version}'s {old:.3f} on today's split"
