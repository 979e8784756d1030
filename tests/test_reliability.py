"""Issue 15: the long-running and operational paths never fail silently. Each test
reproduces one report (it failed before the fix); hashing encoder throughout."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tropes.bulk.lock import OutputLock
from tropes.bulk.loop import ScoreOptions, ScoreStats, score_file
from tropes.training.artifact import ArtifactError, list_versions, load_model

from .conftest import run_cli

EXE = str(Path(sys.executable).with_name("tropes"))
TEXT = "The station AI sealed the bulkheads and told the crew the vent was an accident."


def tropes(settings, *args, env=None, stdin=None):
    return run_cli("--encoder", "hashing", "--models-dir", str(settings.models_dir),
                   "--labels-dir", str(settings.labels_dir), *args, stdin=stdin,
                   env={"TROPES_CACHE_DIR": str(settings.cache_dir), **(env or {})})


def write_lines(path, lines):
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
    return path


def rows(n, start=0, word="row"):
    return [json.dumps({"id": i, "text": f"{TEXT} {word} {i}"}) for i in range(start, start + n)]


def copy_version(models, old, new):
    shutil.copytree(models / old, models / new)
    meta = json.loads((models / new / "model.json").read_text())
    meta["version"] = new
    (models / new / "model.json").write_text(json.dumps(meta))


# --- 1. one run per output ------------------------------------------------------------

def test_second_run_on_the_same_output_is_refused_naming_the_first(workspace, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", rows(5))
    out = tmp_path / "out.jsonl"
    with OutputLock(out):  # another run holds OUT
        run = tropes(workspace, "score", str(src), "-o", str(out))
    assert run.returncode == 1
    err = run.stderr.decode()
    assert f"being written by another tropes run (pid {os.getpid()})" in err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out.jsonl.partial").exists()
    again = tropes(workspace, "score", str(src), "-o", str(out))  # released: now it runs
    assert again.returncode == 0, again.stderr.decode()
    assert not (tmp_path / "out.jsonl.lock").exists()


@pytest.mark.slow
def test_two_real_processes_on_one_output(workspace, tmp_path):
    import time

    src = write_lines(tmp_path / "in.jsonl", rows(20000))
    out = tmp_path / "out.jsonl"
    cmd = [EXE, "--encoder", "hashing", "--models-dir", str(workspace.models_dir), "score",
           str(src), "-o", str(out), "--quiet"]
    env = {**os.environ, "TROPES_CHUNK_ROWS": "20"}
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    lock = tmp_path / "out.jsonl.lock"
    while not (lock.exists() and lock.read_text().strip()):
        assert first.poll() is None, first.stderr.read().decode()
        time.sleep(0.01)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert first.wait() == 0
    assert second.returncode == 1 and f"(pid {first.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    lines = out.read_bytes().splitlines()
    assert [json.loads(x)["id"] for x in lines] == list(range(20000))


# --- 2. resume checks what it resumes -------------------------------------------------

def interrupted_run(settings, tmp_path, out_name="out.jsonl"):
    """A run stopped by a bad row at line 31 (chunks of 10): 30 rows kept for --resume."""
    src = write_lines(tmp_path / "a.jsonl", rows(30) + ["{broken"] + rows(9, 31))
    out = tmp_path / out_name
    run = tropes(settings, "score", str(src), "-o", str(out), env={"TROPES_CHUNK_ROWS": "10"})
    assert run.returncode == 1 and "a.jsonl:31" in run.stderr.decode()
    assert (tmp_path / f"{out_name}.progress").exists()
    return src, out


def resume(settings, src, out, *extra):
    return tropes(settings, "score", str(src), "-o", str(out), "--resume", *extra,
                  env={"TROPES_CHUNK_ROWS": "10"})


def test_resume_with_another_input_is_refused(workspace, tmp_path):
    _, out = interrupted_run(workspace, tmp_path)
    other = write_lines(tmp_path / "b.jsonl", rows(40, word="other"))
    run = resume(workspace, other, out)
    assert run.returncode == 1
    err = run.stderr.decode()
    assert "cannot resume" in err and "a.jsonl" in err and "b.jsonl" in err
    assert not out.exists() and (tmp_path / "out.jsonl.partial").exists()  # kept


def test_resume_after_rows_already_scored_changed_is_refused(workspace, tmp_path):
    src, out = interrupted_run(workspace, tmp_path)
    lines = src.read_text().splitlines()
    lines[3] = json.dumps({"id": 3, "text": "edited after it was scored"})
    src.write_text("\n".join(lines) + "\n")
    run = resume(workspace, src, out)
    assert run.returncode == 1
    assert "the first 30 row(s) of" in run.stderr.decode() and "changed" in run.stderr.decode()


def test_resume_after_fixing_the_bad_row_completes_and_names_the_model(workspace, tmp_path):
    src, out = interrupted_run(workspace, tmp_path)
    lines = src.read_text().splitlines()
    lines[30] = json.dumps({"id": 30, "text": f"{TEXT} row 30"})
    src.write_text("\n".join(lines) + "\n")
    run = resume(workspace, src, out)
    assert run.returncode == 0, run.stderr.decode()
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in got] == list(range(40))
    assert {r["tropes"]["model"] for r in got} == {"v1"}


def test_resume_with_another_model_or_profile_is_refused(workspace, tmp_path):
    src, out = interrupted_run(workspace, tmp_path)
    copy_version(workspace.models_dir, "v1", "v2")
    run = resume(workspace, src, out, "--model", "v2")
    assert run.returncode == 1 and "model was 'v1', now 'v2'" in run.stderr.decode()
    (workspace.models_dir / "LATEST").write_text("v2\n")  # LATEST switched meanwhile
    run = resume(workspace, src, out)
    assert run.returncode == 1 and "model was 'v1', now 'v2'" in run.stderr.decode()
    run = resume(workspace, src, out, "--model", "v1", "--threshold-profile", "recall")
    assert run.returncode == 1 and "threshold_profile was None, now 'recall'" in \
        run.stderr.decode()


def test_parquet_output_names_the_model_in_its_metadata(workspace, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", rows(12))
    out = tmp_path / "out.parquet"
    run = tropes(workspace, "score", str(src), "-o", str(out), env={"TROPES_CHUNK_ROWS": "5"})
    assert run.returncode == 0, run.stderr.decode()
    assert pq.read_schema(out).metadata[b"tropes.model"] == b"v1"
    assert len(pq.read_table(out)) == 12


# --- 3. text that is not valid Unicode is a row problem -------------------------------

SURROGATE_ROW = '{"id": "s", "text": "half an emoji \\ud83d and then more words"}'


def test_lone_surrogate_fails_as_a_row_problem(workspace, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", rows(1) + [SURROGATE_ROW] + rows(1, 2))
    out = tmp_path / "out.jsonl"
    run = tropes(workspace, "score", str(src), "-o", str(out))
    assert run.returncode == 1
    assert "in.jsonl:2: field 'text' is not valid Unicode" in run.stderr.decode()
    assert b"Traceback" not in run.stderr
    skip = tropes(workspace, "score", str(src), "-o", str(out), "--on-error", "skip")
    assert skip.returncode == 0, skip.stderr.decode()
    assert "skipped 1" in skip.stderr.decode()
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [0, 2]


def test_lone_surrogate_in_a_passed_through_field_is_kept_escaped(workspace, tmp_path):
    line = '{"text": "a robot that lies", "note": "bad \\udc00 half", "tropes": 1}'
    src = write_lines(tmp_path / "in.jsonl", [line])  # "tropes" present: line re-serialised
    out = tmp_path / "out.jsonl"
    run = tropes(workspace, "score", str(src), "-o", str(out))
    assert run.returncode == 0, run.stderr.decode()
    assert json.loads(out.read_bytes())["note"] == "bad \udc00 half"


def test_a_strict_client_like_url_mode_never_sees_unencodable_text(tmp_path):
    """--url sends text through httpx, which encodes strictly (UnicodeEncodeError before)."""
    from tropes.result import TagResult

    def strict_tagger(texts):
        for text in texts:
            text.encode("utf-8")
        return [TagResult(labels=[], scores={"x": 0.0}, portrayal="none") for _ in texts]

    src = write_lines(tmp_path / "in.jsonl", rows(2) + [SURROGATE_ROW])
    stats = ScoreStats()
    score_file(strict_tagger, ["x"], str(src), str(tmp_path / "o.jsonl"),
               ScoreOptions(on_error="skip", progress=False), stats)
    assert stats.scored == 2 and stats.skipped == 1
    assert "in.jsonl:3: field 'text' is not valid Unicode" in stats.errors[0]


# --- 4/5. malformed artifacts are ArtifactError; the watcher survives and retries ------

def rewrite_weights(folder: Path, **arrays):
    import hashlib

    with np.load(folder / "weights.npz") as data:
        current = {k: data[k] for k in data.files}
    current.update(arrays)
    np.savez(folder / "weights.npz", **current)
    meta = json.loads((folder / "model.json").read_text())
    meta["files"]["weights.npz"] = hashlib.sha256((folder / "weights.npz").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(meta))


def poison(folder: Path, name: str, value):
    """One element of a weight array set to value, the shape kept (the hash rewritten)."""
    with np.load(folder / "weights.npz") as data:
        array = data[name].astype(np.float64)
    array.flat[0] = value
    rewrite_weights(folder, **{name: array})


def set_field(folder: Path, path: list, value):
    meta = json.loads((folder / "model.json").read_text())
    target = meta
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (folder / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, message", [
    (lambda f: set_field(f, ["files"], "oops"), "'files'"),
    (lambda f: set_field(f, ["labels", 0, "thresholds", "f1"], "high"), "f1"),
    (lambda f: set_field(f, ["labels", 2], 7), "'labels[2]'"),
    (lambda f: set_field(f, ["encoder"], [1]), "'encoder'"),
    (lambda f: set_field(f, ["metrics"], {"test": {"macro_f1": "x"}}), "macro_f1"),
    (lambda f: set_field(f, ["metrics", "test_ece"], float("nan")), "NaN or Infinity"),
    (lambda f: rewrite_weights(f, coef=np.float32(1.0)), "shape ()"),
    (lambda f: poison(f, "coef", np.nan), "NaN"),
    (lambda f: poison(f, "intercept", np.inf), "infinite"),
    (lambda f: poison(f, "coef", 1e30), "overflow"),
    (lambda f: rewrite_weights(f, prototypes=np.zeros((3, 7), np.float32)), "prototype"),
])
def test_every_malformed_version_is_an_artifact_error(workspace, damage, message):
    models = workspace.models_dir
    copy_version(models, "v1", "v2")
    damage(models / "v2")
    with pytest.raises(ArtifactError, match="v2") as caught:
        load_model(models, "v2")
    assert message in str(caught.value)
    listing = tropes(workspace, "models")
    assert listing.returncode == 0 and b"v2" in listing.stdout and b"UNUSABLE" in listing.stdout
    use = tropes(workspace, "models", "use", "v2")
    assert use.returncode == 1 and b"Traceback" not in use.stderr
    assert (models / "LATEST").read_text().strip() == "v1"


@pytest.mark.parametrize("pointer", ["bytes", "folder"])
def test_unreadable_latest_is_an_artifact_error(workspace, pointer):
    latest = workspace.models_dir / "LATEST"
    latest.unlink()
    if pointer == "bytes":
        latest.write_bytes(b"\xff\xfe v1\n")
    else:
        latest.mkdir()
    with pytest.raises(ArtifactError, match="LATEST"):
        load_model(workspace.models_dir)
    assert [r["version"] for r in list_versions(workspace.models_dir)] == ["v1"]
    run = tropes(workspace, "models")
    assert run.returncode == 0 and b"Traceback" not in run.stderr


def holder_for(settings):
    from tropes.http.holder import ModelHolder

    return ModelHolder(settings)


def test_watcher_retries_a_version_whose_folder_was_incomplete(workspace):
    models = workspace.models_dir
    holder = holder_for(workspace)
    reported = []
    holder.listener = reported.append
    copy_version(models, "v1", "v2")
    weights = (models / "v2" / "weights.npz").read_bytes()
    (models / "v2" / "weights.npz").unlink()  # git checked out LATEST before the folder
    (models / "LATEST").write_text("v2\n")
    holder.tick()
    assert holder.classifier.version == "v1" and "weights.npz" in holder.last_error
    state = holder.state()
    assert state["up_to_date"] is False and state["wanted"] == "v2" and state["retrying"]
    holder.tick()  # LATEST did not change, but a failed version is tried again
    assert holder.failed_attempts == 2
    (models / "v2" / "weights.npz").write_bytes(weights)
    holder.tick()
    assert holder.classifier.version == "v2" and holder.last_error is None
    assert holder.state()["up_to_date"] is True
    assert [r["up_to_date"] for r in reported] == [False, False, True]  # the stale metric


def test_watcher_survives_any_exception(workspace, monkeypatch):
    import time

    from tropes.http import holder as holder_module

    holder = holder_for(workspace)
    calls = []

    def explode(*args, **kwargs):
        calls.append(1)
        raise AttributeError("'str' object has no attribute 'get'")

    monkeypatch.setattr(holder_module, "load_model", explode)
    copy_version(workspace.models_dir, "v1", "v2")
    (workspace.models_dir / "LATEST").write_text("v2\n")
    stop = holder.watch(interval_s=0.02)
    deadline = time.time() + 60
    while len(calls) < 3:
        assert time.time() < deadline, "watcher stopped"
        time.sleep(0.02)
    assert "AttributeError" in holder.last_error and holder.classifier.version == "v1"
    monkeypatch.undo()
    deadline = time.time() + 60  # generous: a loaded machine may run the thread rarely
    while holder.classifier.version != "v2":
        assert time.time() < deadline, "watcher did not recover"
        time.sleep(0.02)
    stop.set()


def test_latest_pointing_at_bytes_does_not_stop_the_watcher(workspace):
    holder = holder_for(workspace)
    (workspace.models_dir / "LATEST").write_bytes(b"\xff\xfe\n")
    holder.tick()
    assert holder.classifier.version == "v1" and "UTF-8" in holder.last_error


# --- 8. operational errors are one line, before the model loads -----------------------

def test_missing_output_folder_is_named_before_the_model_loads(workspace, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", rows(2))
    run = tropes(workspace, "score", str(src), "-o", str(tmp_path / "nope" / "out.jsonl"),
                 "--model", "not-a-version")  # the model would fail, had it been loaded
    assert run.returncode == 1
    assert f"output folder {tmp_path / 'nope'} does not exist" in run.stderr.decode()


def test_mixed_type_id_into_parquet_names_the_row_and_leaves_nothing(workspace, tmp_path):
    lines = [json.dumps({"id": 1, "text": TEXT}), json.dumps({"id": "two", "text": TEXT})]
    src = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.parquet"
    run = tropes(workspace, "score", str(src), "-o", str(out))
    assert run.returncode == 1
    err = run.stderr.decode()
    assert "in.jsonl:2: this row does not fit the Parquet schema" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "models"]  # no debris


def fsize_limited(limit):
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_write_that_fails_is_one_line_and_resumable(workspace, tmp_path):
    """A file-size limit makes the write fail by design (EFBIG), as a full disk would."""
    src = write_lines(tmp_path / "in.jsonl", rows(400))
    out = tmp_path / "out.jsonl"
    cmd = [EXE, "--encoder", "hashing", "--models-dir", str(workspace.models_dir), "score",
           str(src), "-o", str(out), "--quiet"]
    env = {**os.environ, "TROPES_CHUNK_ROWS": "50"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True,
                         preexec_fn=fsize_limited(60_000))
    assert run.returncode == 1, run.stderr
    assert "error: cannot write" in run.stderr and "File too large" in run.stderr
    assert "rerun with --resume" in run.stderr and "Traceback" not in run.stderr
    assert not out.exists()
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == list(range(400))


def test_stdout_to_a_full_device_is_one_line(workspace, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    src = write_lines(tmp_path / "in.jsonl", rows(50))
    cmd = [EXE, "--encoder", "hashing", "--models-dir", str(workspace.models_dir), "score",
           str(src), "-o", "-", "--quiet"]
    with open("/dev/full", "wb") as full:
        run = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True)
    assert run.returncode == 1
    assert "error: cannot write standard output: No space left on device" in run.stderr
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr


@pytest.fixture()
def small_mount(tmp_path):
    """A 64 KB tmpfs (read-only variant too) where this machine lets us mount one."""
    mounted = []

    def make(options):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_full_disk_and_read_only_mount(workspace, tmp_path, small_mount):
    src = write_lines(tmp_path / "in.jsonl", rows(400))
    full = small_mount("size=64k")
    run = tropes(workspace, "score", str(src), "-o", str(full / "out.jsonl"),
                 env={"TROPES_CHUNK_ROWS": "50"})
    assert run.returncode == 1
    assert "No space left on device" in run.stderr.decode()
    assert "rerun with --resume" in run.stderr.decode()
    read_only = small_mount("size=64k,ro")
    run = tropes(workspace, "score", str(src), "-o", str(read_only / "out.jsonl"),
                 "--model", "not-a-version")
    assert run.returncode == 1
    assert "is on a read-only file system" in run.stderr.decode()


def test_models_use_without_a_models_folder_here_refuses(workspace, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"  # a folder with no models/ (tmp_path has the copy)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("TROPES_MODELS_DIR", raising=False)
    run = run_cli("--encoder", "hashing", "models", "use", "v1")
    assert run.returncode == 1 and b"--models-dir" in run.stderr


def test_other_operational_errors_are_one_line(workspace, tmp_path, monkeypatch):
    """Any OSError a command meets (here: profile writing into a file posing as a folder)."""
    scored = tmp_path / "scored.jsonl"
    src = write_lines(tmp_path / "in.jsonl", rows(3))
    assert tropes(workspace, "score", str(src), "-o", str(scored)).returncode == 0
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    run = tropes(workspace, "profile", str(scored), "-o", str(blocker / "profile"))
    assert run.returncode == 1, run.stderr.decode()
    err = run.stderr.decode()
    assert err.startswith("error: ") and "Traceback" not in err and str(blocker) in err
