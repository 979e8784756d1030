"""Faults: a training run killed midway, a damaged model named on the command line, and
no connection beyond 127.0.0.1 while loading and scoring."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tropes.training.artifact import list_versions, load_model

from .conftest import REPO

EXE = str(Path(sys.executable).with_name("tropes"))


def test_killed_training_leaves_latest_and_lists_nothing_half_written(workspace):
    cmd = [EXE, "--encoder", "hashing", "--models-dir", str(workspace.models_dir),
           "--labels-dir", str(workspace.labels_dir), "train", "--force", "--version", "v9"]
    env = {**os.environ, "TROPES_CACHE_DIR": str(workspace.cache_dir)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not any(p.name.startswith(".tmp-v9") for p in workspace.models_dir.iterdir()):
        assert proc.poll() is None, "training finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_model(workspace.models_dir).version == "v1"
    listed = [r["version"] for r in list_versions(workspace.models_dir)]
    assert listed == ["v1"]


def test_damaged_model_on_the_command_line_writes_no_output(workspace, tmp_path):
    bad = workspace.models_dir / "v-bad"
    bad.mkdir()
    (bad / "model.json").write_text(json.dumps({"format_version": 1, "version": "v-bad"}))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello there, a short row"}) + "\n")
    out = tmp_path / "out.jsonl"
    run = subprocess.run([EXE, "--encoder", "hashing", "--models-dir", str(workspace.models_dir),
                          "score", str(src), "-o", str(out), "--model", "v-bad"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "missing file weights.npz" in run.stderr
    assert not out.exists() and not (tmp_path / "out.jsonl.partial").exists()


@pytest.mark.encoder
def test_loading_and_scoring_open_no_outside_connection(monkeypatch, tmp_path):
    attempts = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in ("127.0.0.1", "::1", "localhost") and self.family != socket.AF_UNIX:
            attempts.append(address)
            raise OSError("outside connections are blocked in this test")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: guarded(
        socket.socket(), a[0]))
    import tropes

    classifier = tropes.load(models_dir=REPO / "models", precision="fp32")
    assert classifier.tag(["The robot refused to open the pod bay doors."])[0].scores
    assert attempts == []
