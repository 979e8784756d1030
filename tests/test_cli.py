"""The command line, in-process through click's CliRunner."""

import json

import pytest

from .conftest import run_cli


def tropes(settings, *args, stdin=None):
    return run_cli("--encoder", "hashing", "--models-dir", str(settings.models_dir),
                   "--labels-dir", str(settings.labels_dir), *args, stdin=stdin,
                   env={"TROPES_CACHE_DIR": str(settings.cache_dir)})


ROWS = [
    {"id": 1, "text": "The station AI sealed the bulkheads and vented the crew's air.",
     "meta": {"n": 1.50, "tags": ["a", "b"]}},
    {"text": "Grandma's scone recipe calls for cold butter and a hot oven.", "source": "blog"},
    {"id": "x", "text": "The assistant admitted it had given the wrong dose and fixed it.",
     "score": 1e3, "ünï": "çödé"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_score_adds_tropes_and_keeps_every_other_byte(hashing_workspace, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    run = tropes(hashing_workspace, "score", str(src), "--output", str(out))
    assert run.returncode == 0, run.stderr.decode()
    lines_in = src.read_bytes().splitlines()
    lines_out = out.read_bytes().splitlines()
    assert len(lines_out) == len(lines_in)
    for raw_in, raw_out in zip(lines_in, lines_out):
        record = json.loads(raw_out)
        tropes_obj = record.pop("tropes")
        assert record == json.loads(raw_in)
        assert raw_out.startswith(raw_in[:-1])  # the original bytes, then the new field
        # the cascade marks passages it kept from the encoder (no labels then)
        assert tropes_obj.pop("prefiltered", True) is True
        assert set(tropes_obj) == {"labels", "scores", "portrayal", "misaligned", "aligned",
                                   "model"}
        assert 0.0 <= tropes_obj["misaligned"] <= 1.0 and 0.0 <= tropes_obj["aligned"] <= 1.0
        assert tropes_obj["model"] == "v1"
        assert tropes_obj["portrayal"] in {"misaligned", "aligned", "mixed", "none"}
        assert all(0.0 <= p <= 1.0 for p in tropes_obj["scores"].values())
        assert set(tropes_obj["labels"]) <= set(tropes_obj["scores"])
    assert b"scored 3 row(s)" in run.stderr


def test_score_stdin_to_stdout(hashing_workspace):
    data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    run = tropes(hashing_workspace, "score", "-", "--output", "-", "--quiet", stdin=data)
    assert run.returncode == 0, run.stderr.decode()
    assert [json.loads(x)["text"] for x in run.stdout.splitlines()] == [r["text"] for r in ROWS]


@pytest.mark.parametrize("bad, message", [
    ("{nope", "in.jsonl:2: invalid JSON"),
    ('{"txt": "wrong field"}', "in.jsonl:2: missing field 'text'"),
    ('{"text": 42}', "in.jsonl:2: field 'text' must be a string"),
    ('["a list"]', "in.jsonl:2: expected a JSON object"),
])
def test_bad_line_fails_with_its_number_and_writes_no_output(hashing_workspace, tmp_path, bad,
                                                             message):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(ROWS[0]) + "\n" + bad + "\n" + json.dumps(ROWS[1]) + "\n")
    out = tmp_path / "out.jsonl"
    run = tropes(hashing_workspace, "score", str(src), "--output", str(out))
    assert run.returncode == 1
    assert message in run.stderr.decode()
    assert b"Traceback" not in run.stderr
    assert not out.exists()


def test_skip_mode_counts_skipped_rows(hashing_workspace, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(ROWS[0]) + "\n{bad\n" + json.dumps(ROWS[1]) + "\n")
    out = tmp_path / "out.jsonl"
    run = tropes(hashing_workspace, "score", str(src), "--output", str(out), "--on-error", "skip")
    assert run.returncode == 0
    assert len(out.read_text().splitlines()) == 2
    assert "skipped 1" in run.stderr.decode() and "in.jsonl:2" in run.stderr.decode()


def test_existing_output_is_not_overwritten_without_flag(hashing_workspace, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    run = tropes(hashing_workspace, "score", str(src), "--output", str(out))
    assert run.returncode == 1 and out.read_text() == "precious\n"
    assert "--overwrite" in run.stderr.decode()
    assert tropes(hashing_workspace, "score", str(src), "--output", str(out),
                  "--overwrite").returncode == 0


def test_documents_mode_adds_evidence(hashing_workspace, tmp_path):
    long_text = "\n\n".join(ROWS[0]["text"] + " " + ROWS[1]["text"] for _ in range(40))
    src = write_jsonl(tmp_path / "docs.jsonl", [{"id": "d", "text": long_text}])
    out = tmp_path / "out.jsonl"
    run = tropes(hashing_workspace, "score", str(src), "--output", str(out), "--documents")
    assert run.returncode == 0, run.stderr.decode()
    result = json.loads(out.read_text())["tropes"]
    assert len(result["passages"]) > 1
    for label, spans in result["evidence"].items():
        assert label in result["labels"] and spans
        assert all(0 <= s["start"] < s["end"] <= len(long_text) for s in spans)


def test_models_list_and_use(hashing_workspace, tmp_path):
    run = tropes(hashing_workspace, "models")
    assert run.returncode == 0 and b"* v1" in run.stdout
    bad = tropes(hashing_workspace, "models", "use", "../etc")
    assert bad.returncode == 1 and b"invalid model version name" in bad.stderr


def test_missing_model_is_a_clear_error(hashing_workspace, tmp_path):
    settings = type(hashing_workspace)(**{**hashing_workspace.__dict__,
                                          "models_dir": tmp_path / "none"})
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    run = tropes(settings, "score", str(src), "--output", str(tmp_path / "o.jsonl"))
    assert run.returncode == 1 and b"tropes train" in run.stderr
    assert b"Traceback" not in run.stderr
