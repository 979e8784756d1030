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

from .errors import TropesError
from .head import Head

FORMAT_VERSION = 1
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
    head: Head
    prototypes: np.ndarray
    thresholds: dict[str, list[float]]  # profile name -> one threshold per label
    default_profile: str
    meta: dict = field(default_factory=dict)

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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        meta.update({
            "format_version": FORMAT_VERSION,
            "version": model.version,
            "labels": [
                {"id": label, "group": group,
                 "threshold": model.thresholds[model.default_profile][i],
                 "thresholds": {p: t[i] for p, t in model.thresholds.items()}}
                for i, (label, group) in enumerate(zip(model.labels, model.groups))
            ],
            "threshold_profile": model.default_profile,
            "files": {"weights.npz": _sha256(tmp / "weights.npz")},
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
        version = pointer.read_text().strip()
    except FileNotFoundError:
        raise ArtifactError(f"{pointer} not found: train a model with 'tropes train'") from None
    return check_version_name(version)


def load_model(models_dir: Path, version: str | None = None) -> Model:
    """Load and fully validate one version (LATEST when version is None)."""
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
    if not isinstance(meta, dict):
        raise ArtifactError(f"model {version}: model.json must hold an object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"model {version}: format_version {meta.get('format_version')!r} "
                            f"is not supported (this tropes reads {FORMAT_VERSION})")
    if meta.get("version") != version:
        raise ArtifactError(f"model {version}: model.json names version {meta.get('version')!r}")
    expected = (meta.get("files") or {}).get("weights.npz")
    if expected != _sha256(folder / "weights.npz"):
        raise ArtifactError(f"model {version}: weights.npz does not match its recorded sha256 "
                            "(truncated or modified)")
    try:
        with np.load(folder / "weights.npz", allow_pickle=False) as data:
            coef, intercept = data["coef"], data["intercept"]
            prototypes = data["prototypes"]
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"model {version}: cannot read weights.npz ({exc})") from None
    try:
        entries = meta["labels"]
        labels = [e["id"] for e in entries]
        groups = [e["group"] for e in entries]
        profiles = sorted({p for e in entries for p in e["thresholds"]})
        thresholds = {p: [float(e["thresholds"][p]) for e in entries] for p in profiles}
        default = meta["threshold_profile"]
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"model {version}: model.json labels are malformed ({exc})") from None
    if coef.ndim != 2 or coef.shape[0] != len(labels) or intercept.shape != (len(labels),):
        raise ArtifactError(f"model {version}: weights have {coef.shape[0]} label rows but "
                            f"model.json lists {len(labels)} labels")
    dim = (meta.get("encoder") or {}).get("dim")
    if dim is not None and coef.shape[1] != dim + len(prototypes):
        raise ArtifactError(f"model {version}: weights expect {coef.shape[1]} features, encoder "
                            f"gives {dim} + {len(prototypes)} prototype similarities")
    if default not in thresholds:
        raise ArtifactError(f"model {version}: default threshold profile {default!r} missing")
    return Model(version=version, labels=labels, groups=groups,
                 head=Head(coef.astype(np.float32), intercept.astype(np.float32)),
                 prototypes=prototypes.astype(np.float32), thresholds=thresholds,
                 default_profile=default, meta=meta)


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
        if folder.name.startswith("."):
            continue  # unfinished writes
        row = {"version": folder.name, "latest": folder.name == current}
        try:
            model = load_model(models_dir, folder.name)
            row.update(usable=True, metrics=model.meta.get("metrics", {}),
                       created=model.meta.get("created"))
        except ArtifactError as exc:
            row.update(usable=False, error=str(exc))
        rows.append(row)
    return rows
