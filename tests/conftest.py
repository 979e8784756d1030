"""Shared fixtures: a copy of labels/ with low minimums, and a model trained on it with the
tiny hashing encoder (seconds, no torch model load)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tropes.training.embeddings import HashingEncoder
from tropes.training.settings import load_settings

REPO = Path(__file__).resolve().parent.parent


def copy_labels(dest: Path, per_file: int | None = None) -> Path:
    """Copy labels/ (optionally only the first lines of each file) with low minimums."""
    shutil.copytree(REPO / "labels", dest, ignore=shutil.ignore_patterns("*.md"))
    taxonomy = dest / "taxonomy.yaml"
    text = taxonomy.read_text()
    text = text.replace("min_positives: 80", "min_positives: 1")
    text = text.replace("min_test_positives: 15", "min_test_positives: 0")
    taxonomy.write_text(text)
    if per_file is not None:
        for path in dest.glob("*/*.jsonl"):
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            path.write_text("".join(lines[:per_file]), encoding="utf-8")
    return dest


@pytest.fixture(scope="session")
def hashing_workspace(tmp_path_factory):
    """labels copy + a trained hashing-encoder model; returns settings for it."""
    from tropes.training.train import train

    root = tmp_path_factory.mktemp("ws")
    labels = copy_labels(root / "labels", per_file=40)
    settings = load_settings(labels_dir=labels, models_dir=root / "models",
                             cache_dir=root / "cache", encoder="hashing")
    train(settings, progress=False, version="v1", encoder=HashingEncoder())
    return settings


@pytest.fixture()
def workspace(hashing_workspace, tmp_path):
    """A private copy of the session workspace that a test may modify."""
    shutil.copytree(hashing_workspace.models_dir, tmp_path / "models")
    return load_settings(labels_dir=hashing_workspace.labels_dir, models_dir=tmp_path / "models",
                         cache_dir=hashing_workspace.cache_dir, encoder="hashing")


@dataclass
class CliRun:
    returncode: int
    stdout: bytes
    stderr: bytes


def run_cli(*args: str, stdin: bytes | None = None, env: dict | None = None) -> CliRun:
    """The `tropes` command in-process (click's CliRunner), shaped like subprocess.run."""
    from click.testing import CliRunner

    from tropes.cli import main

    result = CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)
    return CliRun(result.exit_code, result.stdout_bytes, result.stderr_bytes)
