"""Bulk scoring: Parquet, shard folders, resume after a kill, and Ray equal to local."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tropes.training.labelset import read_labels

EXE = str(Path(sys.executable).with_name("tropes"))


def run(settings, *args, **kw):
    cmd = [EXE, "--encoder", "hashing", "--models-dir", str(settings.models_dir), *args]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray
    return subprocess.run(cmd, capture_output=True, env=env, **kw)


def corpus_rows(settings, n):
    texts = [p.text for p in read_labels(settings.labels_dir).passages]
    return [{"n": i, "text": texts[i % len(texts)], "source": f"s{i % 3}"} for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_parquet_in_and_out_keeps_columns(hashing_workspace, tmp_path):
    rows = corpus_rows(hashing_workspace, 40)
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / "out.parquet"
    r = run(hashing_workspace, "score", str(src), "-o", str(out), "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    table = pq.read_table(out).to_pylist()
    assert [t["n"] for t in table] == list(range(40))
    assert all(t["source"] == row["source"] for t, row in zip(table, rows))
    jsonl = tmp_path / "out.jsonl"
    assert run(hashing_workspace, "score", str(src), "-o", str(jsonl), "--quiet").returncode == 0
    for a, b in zip(table, read_jsonl(jsonl)):
        assert a["tropes"]["labels"] == b["tropes"]["labels"]
        assert a["tropes"]["scores"] == b["tropes"]["scores"]


def test_folder_of_shards(hashing_workspace, tmp_path):
    rows = corpus_rows(hashing_workspace, 30)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_jsonl(shards / "a.jsonl", rows[:10])
    write_jsonl(shards / "b.jsonl", rows[10:])
    r = run(hashing_workspace, "score", str(shards), "-o", str(tmp_path / "out"), "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    assert len(read_jsonl(tmp_path / "out" / "a.jsonl")) == 10
    assert len(read_jsonl(tmp_path / "out" / "b.jsonl")) == 20


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_kill_then_resume_loses_and_duplicates_nothing(hashing_workspace, tmp_path, suffix):
    rows = corpus_rows(hashing_workspace, 6000)
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / f"out.{suffix}"
    progress = tmp_path / f"out.{suffix}.progress"
    cmd = [EXE, "--encoder", "hashing", "--models-dir", str(hashing_workspace.models_dir),
           "score", str(src), "-o", str(out), "--quiet"]
    env = {**os.environ, "TROPES_CHUNK_ROWS": "50"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (progress.exists() and json.loads(progress.read_text() or "{}").get("rows", 0)
               >= 500):
        assert proc.poll() is None, "finished before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # no partial output under the final name
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()
    got = read_jsonl(out) if suffix == "jsonl" else pq.read_table(out).to_pylist()
    assert [r["n"] for r in got] == list(range(6000))
    assert not progress.exists()


@pytest.mark.ray
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_ray_engine_equals_local(hashing_workspace, tmp_path, fmt):
    pytest.importorskip("ray")
    rows = corpus_rows(hashing_workspace, 120)
    shards = tmp_path / "in"
    shards.mkdir()
    for k in range(2):
        part = rows[k * 60:(k + 1) * 60]
        if fmt == "jsonl":
            write_jsonl(shards / f"part{k}.jsonl", part)
        else:
            pq.write_table(pa.Table.from_pylist(part), shards / f"part{k}.parquet")
    local = run(hashing_workspace, "score", str(shards), "-o", str(tmp_path / "local"),
                "--quiet")
    assert local.returncode == 0, local.stderr.decode()
    ray_run = run(hashing_workspace, "score", str(shards), "-o", str(tmp_path / "ray"),
                  "--engine", "ray", timeout=300)  # the defaults, on this 2-CPU machine
    assert ray_run.returncode == 0, ray_run.stderr.decode()[-3000:]

    def load(folder):
        out = []
        for path in sorted(Path(folder).iterdir()):
            if path.suffix == ".parquet":
                out += pq.read_table(path).to_pylist()
            else:
                out += read_jsonl(path)
        return {r["n"]: r for r in out}

    a, b = load(tmp_path / "local"), load(tmp_path / "ray")
    assert sorted(a) == sorted(b) == list(range(120))
    for n in a:
        assert a[n]["text"] == b[n]["text"] and a[n]["source"] == b[n]["source"]
        assert a[n]["tropes"]["labels"] == b[n]["tropes"]["labels"]
        assert a[n]["tropes"]["portrayal"] == b[n]["tropes"]["portrayal"]
        assert a[n]["tropes"]["scores"] == pytest.approx(b[n]["tropes"]["scores"], abs=1e-9)
