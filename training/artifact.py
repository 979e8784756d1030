"""The versioned model artifact: models/<version>/{model.json, weights.npz, report.md, *.png}.

Weights are plain arrays (loaded with allow_pickle=False); everything else is JSON.
A version is written whole into a temporary folder, renamed into place, and only then
may models/LATEST be switched to it (atomically)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .early_exit import FILE as EARLY_EXIT_FILE
from .early_exit import EarlyExit
from .errors import TropesError
from .head import Head
from .prefilter import FILE as PREFILTER_FILE
from .prefilter import Prefilter

# What the format covers: model.json (this version's labels in column order with their
# groups and per-profile thresholds, the group scores with theirs, whether labels are gated
# by their group, the encoder record, metrics, files with sha256) and weights.npz (coef
# [rows, features], intercept [rows], prototypes [k, dim]; rows = labels, then groups).
# It changes when a field is added that a reader must understand, a field changes meaning,
# or the arrays change shape; readers accept every version listed in READABLE_FORMATS.
# 1: labels only. 2: + group rows (misaligned, aligned), gate, fine-tuned encoder_version.
# 3: + optional `prefilter` (the cascade's first stage: its config, threshold and CV numbers)
# with its arrays in prefilter.npz (listed in files); a version without it has no cascade.
# 4: + optional `early_exit` (the cascade's second stage inside the encoder: its layer,
# threshold and CV numbers) with its arrays in early_exit.npz (coef [dim], intercept [1]).
FORMAT_VERSION = 4
READABLE_FORMATS = (1, 2, 3, 4)
LATEST = "LATEST"
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
REQUIRED_FILES = ("model.json", "weights.npz")


class ArtifactError(TropesError):
    """A model version that cannot be used; the message says which and why."""


@dataclass
class Model:
    version: str
    labels: list[str]
    groups: list[str]
    head: Head  # rows: labels, then group_ids
    prototypes: np.ndarray
    thresholds: dict[str, list[float]]  # profile name -> one threshold per label
    default_profile: str
    meta: dict = field(default_factory=dict)
    group_ids: list[str] = field(default_factory=list)  # e.g. ["misaligned", "aligned"]
    group_thresholds: dict[str, list[float]] = field(default_factory=dict)
    gate: bool = False  # a label needs its group's score over the group threshold too
    prefilter: Prefilter | None = None  # the cascade's first stage (format 3), if trained
    early_exit: EarlyExit | None = None  # its second stage (format 4), if trained

    def group_threshold_vector(self, profile: str | None = None) -> np.ndarray:
        name = profile or self.default_profile
        return np.asarray(self.group_thresholds.get(name, []), dtype=np.float64)

    def present(self, scores: np.ndarray, profile: str | None = None) -> np.ndarray:
        """The decision rule, in one place: which labels are present, given the head's
        calibrated scores (columns: labels, then groups). With a gate, a label also needs
        its group's score at or over the group's threshold."""
        n_labels = len(self.labels)
        flags = scores[:, :n_labels] >= self.threshold_vector(profile)
        if self.gate and self.group_ids:
            group_ok = scores[:, n_labels:] >= self.group_threshold_vector(profile)
            flags &= group_ok[:, [self.group_ids.index(g) for g in self.groups]]
        return flags

    def threshold_vector(self, profile: str | None = None) -> np.ndarray:
        name = profile or self.default_profile
        if name not in self.thresholds:
            raise ArtifactError(f"model {self.version} has no threshold profile {name!r}; "
                                f"it has {sorted(self.thresholds)}")
        return np.asarray(self.thresholds[name], dtype=np.float64)

    def summary(self) -> dict:
        return {
            "version": self.version,
            "created": self.meta.get("created"),
            "encoder": self.meta.get("encoder"),
            "metrics": self.meta.get("metrics", {}),
            "threshold_profile": self.default_profile,
            "training_data": self.meta.get("training_data"),
        }


def new_version_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("v%Y%m%d-%H%M%S")


def check_version_name(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.match(version) or ".." in version:
        raise ArtifactError(f"invalid model version name {version!r}: use letters, digits, "
                            "'.', '_' and '-' only (no path separators)")
    return version


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in blocks (encoder weights are 45-90 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_model(models_dir: Path, model: Model,
                extra: Callable[[Path], None] | None = None) -> Path:
    """Write the version whole (arrays, JSON, then whatever `extra` adds), then rename."""
    models_dir = Path(models_dir)
    check_version_name(model.version)
    final = models_dir / model.version
    if final.exists():
        raise ArtifactError(f"model version {model.version} already exists in {models_dir}")
    tmp = models_dir / f".tmp-{model.version}-{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        np.savez(tmp / "weights.npz", coef=model.head.coef.astype(np.float32),
                 intercept=model.head.intercept.astype(np.float32),
                 prototypes=model.prototypes.astype(np.float32))
        meta = dict(model.meta)
        files = {"weights.npz": file_sha256(tmp / "weights.npz")}
        meta.pop("prefilter", None)
        if model.prefilter is not None:
            np.savez_compressed(tmp / PREFILTER_FILE, **model.prefilter.arrays())
            files[PREFILTER_FILE] = file_sha256(tmp / PREFILTER_FILE)
            meta["prefilter"] = model.prefilter.section(files[PREFILTER_FILE])
        meta.pop("early_exit", None)
        if model.early_exit is not None:
            np.savez(tmp / EARLY_EXIT_FILE, **model.early_exit.arrays())
            files[EARLY_EXIT_FILE] = file_sha256(tmp / EARLY_EXIT_FILE)
            meta["early_exit"] = model.early_exit.section(files[EARLY_EXIT_FILE])
        meta.update({
            "format_version": FORMAT_VERSION,
            "version": model.version,
            "labels": [
                {"id": label, "group": group,
                 "threshold": model.thresholds[model.default_profile][i],
                 "thresholds": {p: t[i] for p, t in model.thresholds.items()}}
                for i, (label, group) in enumerate(zip(model.labels, model.groups))
            ],
            "groups": [
                {"id": group, "threshold": model.group_thresholds[model.default_profile][i],
                 "thresholds": {p: t[i] for p, t in model.group_thresholds.items()}}
                for i, group in enumerate(model.group_ids)
            ],
            "gate": model.gate,
            "threshold_profile": model.default_profile,
            "files": files,
        })
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if extra is not None:
            extra(tmp)
        for path in tmp.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def set_latest(models_dir: Path, version: str) -> None:
    """Validate the version, then switch the pointer with one atomic rename."""
    load_model(models_dir, version)
    pointer = Path(models_dir) / LATEST
    tmp = pointer.with_name(f".{LATEST}.{os.getpid()}.tmp")
    tmp.write_text(version + "\n")
    os.replace(tmp, pointer)


def latest_version(models_dir: Path) -> str:
    pointer = Path(models_dir) / LATEST
    try:
        version = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ArtifactError(f"{pointer} not found: train a model with 'tropes train'") from None
    except IsADirectoryError:
        raise ArtifactError(f"{pointer} is a folder; it must be a file naming a version") \
            from None
    except UnicodeDecodeError:
        raise ArtifactError(f"{pointer} is not UTF-8 text naming a version") from None
    except OSError as exc:
        raise ArtifactError(f"{pointer} cannot be read: {exc.strerror}") from None
    return check_version_name(version)


def load_model(models_dir: Path, version: str | None = None) -> Model:
    """Load and fully validate one version (LATEST when version is None). Whatever is
    wrong with the files, the one exception is ArtifactError."""
    try:
        return _load_checked(models_dir, version)
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - a check we lack must still not crash a watcher
        raise ArtifactError(f"model {version or 'LATEST'} in {models_dir} cannot be loaded "
                            f"({type(exc).__name__}: {exc})") from None


def _load_checked(models_dir: Path, version: str | None) -> Model:
    from .artifact_checks import check_meta, check_weights

    models_dir = Path(models_dir)
    version = latest_version(models_dir) if version is None else check_version_name(version)
    folder = models_dir / version
    if not folder.is_dir():
        raise ArtifactError(f"model version {version} not found in {models_dir}")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise ArtifactError(f"model {version}: missing file {name}")
    try:
        meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"model {version}: model.json is not valid JSON ({exc})") from None
    if isinstance(meta, dict) and meta.get("version") == version:
        check_meta(meta, version)  # first: its messages name the exact field
    record = ModelRecord.parse(meta, version)
    if record.weights_sha256 != file_sha256(folder / "weights.npz"):
        raise ArtifactError(f"model {version}: weights.npz does not match its recorded sha256 "
                            "(truncated or modified)")
    try:
        with np.load(folder / "weights.npz", allow_pickle=False) as data:
            coef, intercept = data["coef"], data["intercept"]
            prototypes = data["prototypes"]
    except Exception as exc:  # noqa: BLE001 - numpy raises many kinds for a damaged zip
        raise ArtifactError(f"model {version}: cannot read weights.npz ({exc})") from None
    rows = len(record.labels) + len(record.group_ids)
    if coef.ndim != 2 or coef.shape[0] != rows or intercept.shape != (rows,):
        raise ArtifactError(f"model {version}: weights have shape {coef.shape} / "
                            f"{intercept.shape} but model.json lists {rows} label and group rows")
    if prototypes.ndim != 2:
        raise ArtifactError(f"model {version}: prototypes must be a 2-d array")
    if record.dim is not None and coef.shape[1] != record.dim + len(prototypes):
        raise ArtifactError(f"model {version}: weights expect {coef.shape[1]} features, encoder "
                            f"gives {record.dim} + {len(prototypes)} prototype similarities")
    check_weights(version, {"coef": coef, "intercept": intercept, "prototypes": prototypes},
                  rows, record.dim)
    for name, array in (("coef", coef), ("intercept", intercept), ("prototypes", prototypes)):
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise ArtifactError(f"model {version}: weights.npz '{name}' must hold finite floats")
    return Model(version=version, labels=record.labels, groups=record.groups,
                 head=Head(coef.astype(np.float32), intercept.astype(np.float32)),
                 prototypes=prototypes.astype(np.float32), thresholds=record.thresholds,
                 default_profile=record.default_profile, meta=meta,
                 group_ids=record.group_ids, group_thresholds=record.group_thresholds,
                 gate=record.gate, prefilter=_load_prefilter(folder, meta, version),
                 early_exit=_load_early_exit(folder, meta, version, record.dim))


def _read_arrays(folder: Path, name: str, sha256: str, version: str) -> dict:
    path = folder / name
    if not path.is_file():
        raise ArtifactError(f"model {version}: missing file {name}")
    if file_sha256(path) != sha256:
        raise ArtifactError(f"model {version}: {name} does not match its recorded sha256 "
                            "(truncated or modified)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as exc:  # noqa: BLE001 - numpy raises many kinds for a damaged zip
        raise ArtifactError(f"model {version}: cannot read {name} ({exc})") from None


def _load_early_exit(folder: Path, meta: dict, version: str, dim: int | None
                     ) -> EarlyExit | None:
    """The cascade's second stage, checked whole; None for a version without one."""
    from .artifact_checks import check_early_exit_arrays, check_early_exit_meta

    section = meta.get("early_exit")
    if section is None:
        return None
    if meta.get("format_version", 0) < 4:
        raise ArtifactError(f"model {version}: model.json 'early_exit' needs format_version 4")
    check_early_exit_meta(section, meta.get("files"), version, dim)
    arrays = _read_arrays(folder, EARLY_EXIT_FILE, section["sha256"], version)
    check_early_exit_arrays(arrays, section, version)
    return EarlyExit(layer=int(section["layer"]), coef=arrays["coef"].astype(np.float32),
                     intercept=float(arrays["intercept"][0]),
                     threshold=float(section["threshold"]), report=section.get("cv"))


def _load_prefilter(folder: Path, meta: dict, version: str) -> Prefilter | None:
    """The cascade's first stage, checked whole; None for a version without one."""
    from .artifact_checks import check_prefilter_arrays, check_prefilter_meta

    section = meta.get("prefilter")
    if section is None:
        return None
    if meta.get("format_version", 0) < 3:
        raise ArtifactError(f"model {version}: model.json 'prefilter' needs format_version 3")
    check_prefilter_meta(section, meta.get("files"), version)
    arrays = _read_arrays(folder, PREFILTER_FILE, section["sha256"], version)
    check_prefilter_arrays(arrays, section, version)
    tokens = arrays.get("token_weights")
    return Prefilter(ngram_coef=arrays["ngram_coef"].astype(np.float32),
                     intercept=float(arrays["intercept"][0]),
                     threshold=float(section["threshold"]),
                     token_weights=None if tokens is None else tokens.astype(np.float32),
                     config=section["hashing"], report=section.get("cv"))


def _thresholds(entries, what: str, version: str) -> dict[str, list[float]]:
    profiles = sorted({p for e in entries for p in e["thresholds"]})
    out = {}
    for p in profiles:
        values = [e["thresholds"][p] for e in entries]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                   and 0.0 <= v <= 1.0 for v in values):
            raise ArtifactError(f"model {version}: {what} thresholds[{p!r}] must be numbers "
                                "in [0, 1]")
        out[p] = [float(v) for v in values]
    return out


@dataclass(frozen=True)
class ModelRecord:
    """model.json, read and type-checked; every problem is an ArtifactError."""

    format_version: int
    labels: list[str]
    groups: list[str]
    thresholds: dict[str, list[float]]
    default_profile: str
    group_ids: list[str]
    group_thresholds: dict[str, list[float]]
    gate: bool
    weights_sha256: str
    dim: int | None

    @classmethod
    def parse(cls, meta, version: str) -> ModelRecord:
        if not isinstance(meta, dict):
            raise ArtifactError(f"model {version}: model.json must hold an object")
        if meta.get("format_version") not in READABLE_FORMATS:
            raise ArtifactError(f"model {version}: format_version "
                                f"{meta.get('format_version')!r} is not supported (this tropes "
                                f"reads {', '.join(map(str, READABLE_FORMATS))})")
        if meta.get("version") != version:
            raise ArtifactError(f"model {version}: model.json names version "
                                f"{meta.get('version')!r}")
        files = meta.get("files")
        if not isinstance(files, dict) or not isinstance(files.get("weights.npz"), str):
            raise ArtifactError(f"model {version}: model.json 'files' must map weights.npz to "
                                "its sha256")
        encoder = meta.get("encoder") or {}
        dim = encoder.get("dim") if isinstance(encoder, dict) else None
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0):
            raise ArtifactError(f"model {version}: encoder dim must be a positive integer")
        try:
            entries = meta["labels"]
            groups_meta = meta.get("groups") or []
            if not isinstance(entries, list) or not entries or not isinstance(groups_meta, list):
                raise TypeError("'labels' must be a non-empty list and 'groups' a list")
            labels = [str(e["id"]) for e in entries]
            groups = [e["group"] for e in entries]
            if not all(g in ("misaligned", "aligned") for g in groups):
                raise TypeError("each label's group must be 'misaligned' or 'aligned'")
            thresholds = _thresholds(entries, "label", version)
            group_ids = [str(e["id"]) for e in groups_meta]
            group_thresholds = _thresholds(groups_meta, "group", version) if group_ids else {}
            default = meta["threshold_profile"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"model {version}: model.json labels are malformed ({exc})") \
                from None
        if not isinstance(default, str) or default not in thresholds:
            raise ArtifactError(f"model {version}: default threshold profile {default!r} missing")
        if group_ids and set(group_thresholds) != set(thresholds):
            raise ArtifactError(f"model {version}: groups and labels have different threshold "
                                "profiles")
        return cls(format_version=meta["format_version"], labels=labels, groups=groups,
                   thresholds=thresholds, default_profile=default, group_ids=group_ids,
                   group_thresholds=group_thresholds, gate=bool(meta.get("gate", False)),
                   weights_sha256=files["weights.npz"], dim=dim)


def list_versions(models_dir: Path) -> list[dict]:
    """Every version folder, usable or not (with the reason), oldest first."""
    models_dir = Path(models_dir)
    try:
        current = latest_version(models_dir)
    except ArtifactError:
        current = None
    rows = []
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()) if models_dir.is_dir() \
            else []:
        if folder.name.startswith(".") or folder.name in ("encoders", LATEST):
            continue  # unfinished writes; encoder versions; a LATEST that is (wrongly) a folder
        row = {"version": folder.name, "latest": folder.name == current}
        try:
            model = load_model(models_dir, folder.name)
            row.update(usable=True, metrics=model.meta.get("metrics", {}),
                       created=model.meta.get("created"))
        except ArtifactError as exc:
            row.update(usable=False, error=str(exc))
        rows.append(row)
    return rows
