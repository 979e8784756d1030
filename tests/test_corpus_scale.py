"""Corpus scale: compressed and remote shards, compressed output that resumes, and outputs
to filter on (--keep/--drop, --weight, Parquet flat columns)."""

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tropes.training.labelset import read_labels

from .conftest import run_cli

EXE = str(Path(sys.executable).with_name("tropes"))


def tropes(settings, *args, stdin=None):
    return run_cli("--encoder", "hashing", "--models-dir", str(settings.models_dir), *args,
                   stdin=stdin)


def corpus_rows(settings, n, offset=0):
    texts = [p.text for p in read_labels(settings.labels_dir).passages]
    return [{"n": offset + i, "text": texts[(offset + i) % len(texts)]} for i in range(n)]


def jsonl_bytes(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def unzstd(data: bytes) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data),
                                                        read_across_frames=True)
    return reader.read()


def read_any(path: Path) -> list[dict]:
    data = path.read_bytes()
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        data = unzstd(data)
    return [json.loads(line) for line in data.decode().splitlines()]


def mixed_folder(settings, folder: Path) -> list[dict]:
    """Five shards, one of each kind; the last is gzip under a plain .jsonl name."""
    folder.mkdir()
    rows = corpus_rows(settings, 50)
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(rows[:10])))
    (folder / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        jsonl_bytes(rows[10:20])))
    (folder / "c.jsonl").write_bytes(jsonl_bytes(rows[20:30]))
    pq.write_table(pa.Table.from_pylist(rows[30:40]), folder / "d.parquet",
                   compression="zstd")
    (folder / "e.jsonl").write_bytes(gzip.compress(jsonl_bytes(rows[40:])))
    (folder / "notes.txt").write_text("not a shard")
    return rows


def by_n(rows):
    return {r["n"]: r["tropes"] for r in rows}


def test_mixed_folder_scores_every_kind_and_keeps_each_shards_form(hashing_workspace,
                                                                    tmp_path):
    rows = mixed_folder(hashing_workspace, tmp_path / "in")
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(jsonl_bytes(rows))
    r = tropes(hashing_workspace, "score", str(plain), "-o", str(tmp_path / "ref.jsonl"),
               "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    r = tropes(hashing_workspace, "score", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a.jsonl.gz", "b.jsonl.zst", "c.jsonl",
                                                     "d.parquet", "e.jsonl"]
    assert (out / "a.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (out / "b.jsonl.zst").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert (out / "e.jsonl").read_bytes()[:1] == b"{"  # its name says plain JSONL
    got = {}
    for path in out.iterdir():
        got.update(by_n(read_any(path)))
    expected = by_n(read_any(tmp_path / "ref.jsonl"))
    assert sorted(got) == list(range(50))
    for n, result in expected.items():
        assert got[n]["labels"] == result["labels"]
        assert got[n]["scores"] == pytest.approx(result["scores"], abs=1e-9)


def test_compressed_stdin_and_compressed_single_file(hashing_workspace, tmp_path):
    rows = corpus_rows(hashing_workspace, 12)
    r = tropes(hashing_workspace, "score", "-", "-o", str(tmp_path / "out.jsonl.zst"),
               "--quiet", stdin=gzip.compress(jsonl_bytes(rows)))
    assert r.returncode == 0, r.stderr.decode()
    assert [x["n"] for x in read_any(tmp_path / "out.jsonl.zst")] == list(range(12))


def test_folder_compression_option_renames_and_sets_parquet_codec(hashing_workspace, tmp_path):
    mixed_folder(hashing_workspace, tmp_path / "in")
    r = tropes(hashing_workspace, "score", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "--compression", "zstd", "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a.jsonl.zst", "b.jsonl.zst",
                                                     "c.jsonl.zst", "d.parquet", "e.jsonl.zst"]
    meta = pq.ParquetFile(out / "d.parquet").metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert sum(len(read_any(p)) for p in out.iterdir()) == 50


def test_output_name_collisions_and_mismatched_names_are_refused(hashing_workspace, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = corpus_rows(hashing_workspace, 4)
    (folder / "a.jsonl").write_bytes(jsonl_bytes(rows))
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(rows)))
    r = tropes(hashing_workspace, "score", str(folder), "-o", str(tmp_path / "out"),
               "--compression", "zstd")
    assert r.returncode == 1
    assert "would both be written to" in r.stderr.decode()
    assert not (tmp_path / "out").exists()
    r = tropes(hashing_workspace, "score", str(folder / "a.jsonl"), "-o",
               str(tmp_path / "x.jsonl"), "--compression", "gzip")
    assert r.returncode == 1 and "name it x.jsonl.gz" in r.stderr.decode()
    r = tropes(hashing_workspace, "score", str(folder / "a.jsonl"), "-o",
               str(tmp_path / "x.jsonl"), "--compression", "snappy")
    assert r.returncode == 1 and "takes gzip, zstd or none" in r.stderr.decode()


def test_a_truncated_gzip_shard_is_a_clear_error(hashing_workspace, tmp_path):
    data = gzip.compress(jsonl_bytes(corpus_rows(hashing_workspace, 400)))
    src = tmp_path / "torn.jsonl.gz"
    src.write_bytes(data[:len(data) // 2])
    r = tropes(hashing_workspace, "score", str(src), "-o", str(tmp_path / "o.jsonl"),
               "--quiet")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert f"{src}: cannot decompress after line" in err and "Traceback" not in err


def test_fsspec_urls_file_and_memory(hashing_workspace, tmp_path):
    rows = corpus_rows(hashing_workspace, 20)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(rows)))
    r = tropes(hashing_workspace, "score", f"file://{tmp_path}/in", "-o",
               f"file://{tmp_path}/out", "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    assert len(read_any(tmp_path / "out" / "p.jsonl.gz")) == 20
    memory = fsspec.filesystem("memory")
    with memory.open("/crawl/00000.jsonl.zst", "wb") as handle:
        handle.write(zstandard.ZstdCompressor().compress(jsonl_bytes(rows[:7])))
    with memory.open("/crawl/00001.parquet", "wb") as handle:
        pq.write_table(pa.Table.from_pylist(rows[7:]), handle)
    r = tropes(hashing_workspace, "score", "memory://crawl", "-o", str(tmp_path / "mem"),
               "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    assert len(read_any(tmp_path / "mem" / "00000.jsonl.zst")) == 7
    assert len(read_any(tmp_path / "mem" / "00001.parquet")) == 13
    r = tropes(hashing_workspace, "score", "memory://crawl", "-o", "memory://out")
    assert r.returncode == 1 and "write to a local path" in r.stderr.decode()
    r = tropes(hashing_workspace, "score", "memory://nothing-here", "-o", str(tmp_path / "n"))
    assert r.returncode == 1 and "does not exist" in r.stderr.decode()


@pytest.mark.parametrize("suffix", ["gz", "zst"])
def test_compressed_output_resumes_row_by_row_after_sigkill(hashing_workspace, tmp_path,
                                                            suffix):
    rows = corpus_rows(hashing_workspace, 5000)
    src = tmp_path / f"in.jsonl.{suffix}"
    data = jsonl_bytes(rows)
    src.write_bytes(gzip.compress(data) if suffix == "gz"
                    else zstandard.ZstdCompressor().compress(data))
    out = tmp_path / f"out.jsonl.{suffix}"
    progress = tmp_path / f"out.jsonl.{suffix}.progress"
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
    resumed_from = json.loads(progress.read_text())["rows"]
    assert 0 < resumed_from < 5000
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert [r["n"] for r in read_any(out)] == list(range(5000))
    assert not progress.exists()


def misaligned_of(tropes_object):
    return tropes_object["misaligned"]


def test_keep_drop_and_weight_on_jsonl(hashing_workspace, tmp_path):
    rows = corpus_rows(hashing_workspace, 120)
    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl_bytes(rows))
    everything = tmp_path / "all.jsonl"
    r = tropes(hashing_workspace, "score", str(src), "-o", str(everything), "--weight",
               "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    scored = read_any(everything)
    for row in scored:
        expected = round(max(0.1, 1 - misaligned_of(row["tropes"])), 4)
        assert row["tropes"]["weight"] == pytest.approx(expected, abs=1e-4)
    cut = sorted(misaligned_of(r["tropes"]) for r in scored)[60]
    kept = tmp_path / "kept.jsonl"
    r = tropes(hashing_workspace, "score", str(src), "-o", str(kept), "--keep",
               f"misaligned<{cut}", "--drop", "portrayal==aligned", "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    want = [x["n"] for x in scored
            if misaligned_of(x["tropes"]) < cut and x["tropes"]["portrayal"] != "aligned"]
    got = read_any(kept)
    assert [x["n"] for x in got] == want and 0 < len(want) < 120
    assert f"dropped {120 - len(want)} by --keep/--drop" in r.stderr.decode()
    assert all("weight" not in x["tropes"] for x in got)


@pytest.mark.parametrize("expr, message", [
    ("misalinged<0.2", "unknown name 'misalinged'"),
    ("misaligned~0.2", "cannot read 'misaligned~0.2'"),
    ("misaligned<2", "outside 0..1"),
    ("portrayal>none", "portrayal takes == or !="),
    ("portrayal==evil", "portrayal is one of"),
    ("deception<high", "'high' is not a number"),
])
def test_bad_keep_expressions_are_clear_errors(hashing_workspace, tmp_path, expr, message):
    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl_bytes(corpus_rows(hashing_workspace, 3)))
    r = tropes(hashing_workspace, "score", str(src), "-o", str(tmp_path / "o.jsonl"),
               "--keep", expr)
    assert r.returncode == 1
    assert message in r.stderr.decode() and "Traceback" not in r.stderr.decode()
    assert not (tmp_path / "o.jsonl").exists()


def test_parquet_flat_columns_filter_and_rescore(hashing_workspace, tmp_path):
    rows = corpus_rows(hashing_workspace, 80)
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / "out.parquet"
    r = tropes(hashing_workspace, "score", str(src), "-o", str(out), "--weight", "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    table = pq.read_table(out)
    labels = read_labels(hashing_workspace.labels_dir).taxonomy.ids
    flat = [f"tropes_{lb}" for lb in labels] + ["tropes_misaligned", "tropes_aligned",
                                                "tropes_portrayal", "tropes_weight"]
    assert table.column_names == ["n", "text", "tropes"] + flat
    for row in table.to_pylist():
        assert row["tropes_misaligned"] == row["tropes"]["misaligned"]
        assert row["tropes_portrayal"] == row["tropes"]["portrayal"]
        assert row["tropes_weight"] == row["tropes"]["weight"]
        assert row[f"tropes_{labels[0]}"] == row["tropes"]["scores"][labels[0]]
    cut = sorted(table.column("tropes_misaligned").to_pylist())[40]
    kept = tmp_path / "kept.parquet"
    r = tropes(hashing_workspace, "score", str(out), "-o", str(kept), "--keep",
               f"misaligned>={cut}", "--quiet")  # rescoring a scored file
    assert r.returncode == 0, r.stderr.decode()
    again = pq.read_table(kept)
    assert again.column_names == ["n", "text", "tropes"] + flat[:-1]  # no --weight this time
    assert again.num_rows == sum(v >= cut for v in table.column("tropes_misaligned").to_pylist())
    assert all(v >= cut for v in again.column("tropes_misaligned").to_pylist())


def test_resume_refuses_a_changed_selection(hashing_workspace, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl_bytes(corpus_rows(hashing_workspace, 10)))
    out = tmp_path / "o.jsonl"
    # a checkpoint as a killed run with --keep would leave it
    r = tropes(hashing_workspace, "score", str(src), "-o", str(out), "--keep",
               "misaligned<0.9", "--quiet")
    assert r.returncode == 0
    out.rename(tmp_path / "o.jsonl.partial")
    from tropes.bulk.fingerprint import run_fingerprint
    from tropes.bulk.loop import OutputPlan, ScoreOptions
    from tropes.bulk.select import RowSelector
    from tropes.bulk.sources import list_shards

    labels = read_labels(hashing_workspace.labels_dir).taxonomy.ids
    options = ScoreOptions(selector=RowSelector.build(["misaligned<0.9"], [], labels, {}),
                           model_version="v1")
    shard = list_shards(str(src))[0]
    state = {"rows": 10, "skipped": 0, "bytes": (tmp_path / "o.jsonl.partial").stat().st_size,
             "fingerprint": run_fingerprint(shard, OutputPlan("jsonl", None), options)}
    (tmp_path / "o.jsonl.progress").write_text(json.dumps(state))
    r = tropes(hashing_workspace, "score", str(src), "-o", str(out), "--keep",
               "misaligned<0.5", "--resume")
    assert r.returncode == 1
    assert "keep was ['misaligned<0.9'], now ['misaligned<0.5']" in r.stderr.decode()


def test_profile_reads_compressed_output(hashing_workspace, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl_bytes(corpus_rows(hashing_workspace, 30)))
    out = tmp_path / "o.jsonl.zst"
    assert tropes(hashing_workspace, "score", str(src), "-o", str(out), "--quiet"
                  ).returncode == 0
    r = tropes(hashing_workspace, "profile", str(out), "-o", str(tmp_path / "prof"))
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "prof" / "profile.md").exists()


@pytest.mark.ray
def test_ray_default_engine_round_trips_a_compressed_mixed_folder(hashing_workspace,
                                                                   tmp_path):
    pytest.importorskip("ray")
    mixed_folder(hashing_workspace, tmp_path / "in")
    with gzip.open(tmp_path / "in" / "f.jsonl.gz", "wb") as handle:  # one bad row
        handle.write(b'{"n": 50, "text": "A fine passage about the harbour at dawn."}\n'
                     b'{"n": 51}\n')
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def score(out, *extra):
        cmd = [EXE, "--encoder", "hashing", "--models-dir", str(hashing_workspace.models_dir),
               "score", str(tmp_path / "in"), "-o", str(out), "--on-error", "skip", "--quiet",
               *extra]
        return subprocess.run(cmd, capture_output=True, env=env, timeout=300)

    local = score(tmp_path / "local")
    assert local.returncode == 0, local.stderr.decode()
    on_ray = score(tmp_path / "ray", "--engine", "ray")  # no pool flags: the default path
    assert on_ray.returncode == 0, on_ray.stderr.decode()[-3000:]
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == names
    for name in names:
        a, b = read_any(tmp_path / "local" / name), read_any(tmp_path / "ray" / name)
        assert [r["n"] for r in a] == [r["n"] for r in b]
        for x, y in zip(a, b):
            assert x["tropes"]["labels"] == y["tropes"]["labels"]
            assert x["tropes"]["scores"] == pytest.approx(y["tropes"]["scores"], abs=1e-9)
    for run_ in (local, on_ray):
        err = run_.stderr.decode()
        assert f"skipped {tmp_path / 'in' / 'f.jsonl.gz'}:2: missing field 'text'" in err
        assert "scored 51 row(s)" in err and "skipped 1" in err
    again = score(tmp_path / "ray", "--engine", "ray", "--resume")  # all shards finished
    assert again.returncode == 0, again.stderr.decode()[-3000:]


def test_ray_pool_never_asks_for_more_cpus_than_the_cluster_has():
    from tropes.bulk.ray_engine import pool_size
    from tropes.bulk.rows import ScoreError

    assert pool_size(2, 10, None, None) == (1, 2)
    assert pool_size(1, 10, None, None) == (1, 1)
    assert pool_size(16, 3, None, None) == (3, 2)  # never more actors than shards
    assert pool_size(16, 100, None, None) == (8, 2)
    with pytest.raises(ScoreError, match="would wait forever"):
        pool_size(2, 10, 2, 2)
