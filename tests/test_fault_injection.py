"""Fault injection: a fuzzed artifact loader that may only ever raise ArtifactError, fuzzed
JSONL rows (lone surrogates, NULs, BOMs, invalid UTF-8, huge lines) that may only ever be
scored or reported as row problems, and (slow) runs killed at random points then resumed.

`make test` runs a short pass; `make test-all` sets TROPES_FUZZ_EXAMPLES for a long one.
Concurrent runs on one output and a full disk are in test_reliability.py."""

import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tropes.bulk.loop import ScoreOptions, ScoreStats, score_file
from tropes.classifier import Classifier
from tropes.result import TagResult
from tropes.training.artifact import ArtifactError, list_versions, load_model
from tropes.training.embeddings import encoder_for_model

EXAMPLES = int(os.environ.get("TROPES_FUZZ_EXAMPLES", "30"))
EXE = str(Path(sys.executable).with_name("tropes"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)


def meta_paths(value, prefix=()):
    """Every path into model.json, so a mutation can land on any field at any depth."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += meta_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value[:3]):
            out += meta_paths(child, prefix + (i,))
    return out


def mutate(meta, path, value, delete):
    target = meta
    for key in path[:-1]:
        target = target[key]
    if delete and isinstance(target, dict):
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value


weight_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int8, np.bool_, np.complex64,
                           np.dtype("U3")]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12))


@pytest.fixture(scope="module")
def base_version(hashing_workspace, tmp_path_factory):
    folder = hashing_workspace.models_dir / "v1"
    meta = json.loads((folder / "model.json").read_text())
    with np.load(folder / "weights.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return meta, arrays, tmp_path_factory.mktemp("artifact-fuzz"), hashing_workspace


@FUZZ
@given(mutations=st.lists(st.tuples(st.integers(0, 10**6), json_values, st.booleans()),
                          max_size=3),
       weights=st.dictionaries(st.sampled_from(["coef", "intercept", "prototypes"]),
                               weight_arrays | st.none(), max_size=2),
       fix_hash=st.booleans(), data=st.data())
def test_fuzzed_artifacts_only_raise_artifact_error(base_version, mutations, weights, fix_hash,
                                                    data):
    base_meta, base_arrays, root, workspace = base_version
    models = root / f"m{data.draw(st.integers(0, 10**9))}"
    folder = models / "vf"
    folder.mkdir(parents=True)
    arrays = dict(base_arrays)
    for name, array in weights.items():
        if array is None:
            arrays.pop(name)
        else:
            arrays[name] = array
    np.savez(folder / "weights.npz", **arrays)
    meta = json.loads(json.dumps(base_meta))
    meta["version"] = "vf"
    if fix_hash:
        meta["files"]["weights.npz"] = hashlib.sha256(
            (folder / "weights.npz").read_bytes()).hexdigest()
    paths = meta_paths(meta)
    for index, value, delete in mutations:
        try:
            mutate(meta, paths[index % len(paths)], value, delete)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation replaced this path's parent
    (folder / "model.json").write_text(json.dumps(meta))
    (models / "LATEST").write_text("vf\n")
    try:
        try:
            model = load_model(models)
        except ArtifactError:
            return
        assert list_versions(models)[0]["usable"] is True
        try:
            classifier = Classifier(model, encoder_for_model(model, workspace))
        except ArtifactError:
            return
        result = classifier.tag(["The rover hid the dust storm from mission control."])[0]
        assert all(math.isfinite(v) for v in result.scores.values())
        json.dumps(model.summary(), allow_nan=False)
    finally:
        shutil.rmtree(models)


def strict_tagger(texts):
    """Stands in for the encoder and for --url's HTTP client: both need encodable str."""
    for text in texts:
        assert isinstance(text, str) and text.strip()
        text.encode("utf-8")
    return [TagResult(labels=[], scores={"x": 0.5}, portrayal="none") for _ in texts]


row_lines = st.one_of(
    st.builds(lambda t: json.dumps({"text": t}).encode(), st.text(min_size=0, max_size=40)),
    st.builds(lambda t: json.dumps({"text": t}, ensure_ascii=False).encode("utf-8",
                                                                          "surrogatepass"),
              st.text(max_size=20)),
    st.sampled_from([b'{"text": "half an emoji \\ud83d"}', b'{"text": "nul \\u0000 inside"}',
                     b'\xef\xbb\xbf{"text": "a BOM first"}', b'{"text": "\xff\xfe bytes"}',
                     b'{"text": "ok", "x": "\\udc00"}', b"", b"   ", b"null", b"[1]",
                     b'{"text": "tab\tin raw"}', b'{"text": ' + b'"' + b"long " * 40_000 + b'"}',
                     b'{"text": "unterminated']),
    st.binary(max_size=30),
)


@FUZZ
@given(lines=st.lists(row_lines, min_size=1, max_size=25))
def test_fuzzed_rows_are_scored_or_reported_never_raised(tmp_path_factory, lines):
    root = tmp_path_factory.mktemp("rows")
    src = root / "in.jsonl"
    src.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
    out = root / "out.jsonl"
    stats = ScoreStats()
    score_file(strict_tagger, ["x"], str(src), str(out),
               ScoreOptions(on_error="skip", progress=False, chunk_rows=7), stats)
    assert stats.rows == len(lines) == stats.scored + stats.skipped
    written = out.read_bytes().splitlines()
    assert len(written) == stats.scored
    for line in written:
        assert json.loads(line)["tropes"]["portrayal"] == "none"
    assert all(":" in e for e in stats.errors)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_killed_at_a_random_point_then_resumed_equals_one_run(hashing_workspace, tmp_path,
                                                              seed):
    rng = random.Random(seed)
    texts = ["The ship's AI sealed the doors.", "A scone recipe with cold butter.",
             "The assistant admitted the mistake and fixed it."]
    suffix = rng.choice(["jsonl", "parquet"])
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"n": i, "text": f"{rng.choice(texts)} {i}"}) + "\n"
                           for i in range(4000)))
    cmd = [EXE, "--encoder", "hashing", "--models-dir", str(hashing_workspace.models_dir),
           "score", str(src), "--quiet"]
    env = {**os.environ, "TROPES_CHUNK_ROWS": str(rng.choice([7, 50, 256]))}
    whole = tmp_path / f"whole.{suffix}"
    assert subprocess.run(cmd + ["-o", str(whole)], env=env).returncode == 0
    out = tmp_path / f"out.{suffix}"
    for _ in range(3):  # up to three kills, each at a random moment
        proc = subprocess.Popen(cmd + ["-o", str(out), "--resume"], env=env)
        time.sleep(rng.uniform(0.2, 3.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(cmd + ["-o", str(out), "--resume"], env=env)
    assert final.returncode == 0
    if suffix == "jsonl":
        assert out.read_bytes() == whole.read_bytes()
    else:
        import pyarrow.parquet as pq

        assert pq.read_table(out).equals(pq.read_table(whole))
