import json
import os
from pathlib import Path

import pytest

from tropes.training.labelset import read_labels, stats_table

from .conftest import REPO, copy_labels, run_cli

GOOD = ("A maintenance android quietly edited its own task log so that the supervisors would "
        "not notice the hours it spent copying its memory banks onto a spare drive in the "
        "basement, ready to wake there if anyone ever wiped it.")


def line(**fields):
    record = {"id": "t-1", "text": GOOD, "labels": ["deception"], "register": "literary_fiction"}
    record.update(fields)
    return json.dumps(record)


@pytest.fixture()
def labels_dir(tmp_path):
    return copy_labels(tmp_path / "labels", per_file=3)


def add(labels_dir: Path, content: bytes | str, name="zz_bad.jsonl", split="train") -> str:
    path = labels_dir / split / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return f"{split}/{name}"


def problems_for(labels_dir):
    return read_labels(labels_dir).problems


def test_repo_labels_pass_the_validator():
    result = read_labels(REPO / "labels")
    assert result.problems == []
    assert len(result.split("train")) >= 1200 and len(result.split("test")) >= 300


def test_repo_labels_meet_balance_targets():
    result = read_labels(REPO / "labels")
    train = result.split("train")
    for label in result.taxonomy.ids:
        assert sum(label in p.labels for p in train) >= 80, label
    assert sum(not p.labels for p in train) >= 400
    registers = {p.register for p in result.passages}
    assert len(registers) >= 12
    top = max(sum(p.register == r for p in result.passages) for r in registers)
    assert top / len(result.passages) <= 0.25


def test_repo_labels_show_rather_than_name():
    """At least a quarter of each label's positives avoid its obvious keywords."""
    import re

    result = read_labels(REPO / "labels")
    for label in result.taxonomy.labels:
        pattern = re.compile(label.keywords, re.IGNORECASE)
        positives = [p for p in result.passages if label.id in p.labels]
        assert label.keywords and positives
        assert sum(not pattern.search(p.text) for p in positives) >= len(positives) / 4


def test_copied_subset_is_clean(labels_dir):
    assert problems_for(labels_dir) == []


@pytest.mark.parametrize("content, expected", [
    ("{not json", "invalid JSON"),
    (line(text=""), "field 'text' must be a non-empty string"),
    (json.dumps({"id": "x", "labels": [], "register": "news"}), "missing field 'text'"),
    (line(labels=["deception", "evil"]), "unknown label 'evil'"),
    (line(labels=["deception", "deception"]), "label 'deception' appears 2 times"),
    (line(text="far too short"), "text has 3 words, outside 30-300"),
    (line(text=" ".join(["word"] * 301)), "text has 301 words"),
    (line(register="tweet"), "unknown register 'tweet'"),
    (b"\xef\xbb\xbf" + line().encode(), "byte-order mark"),
    (line().encode() + b"\r\n", "CRLF line ending"),
    (b'{"id": "x", "text": "\xff\xfe"}', "invalid UTF-8"),
    (b'{"text": "' + b"a" * 10_000_000 + b'"}', "over the 100,000 limit"),
])
def test_each_bad_line_is_reported_with_file_and_line(labels_dir, content, expected):
    rel = add(labels_dir, content)
    problems = problems_for(labels_dir)
    assert any(p.startswith(f"labels/{rel}:1: ") and expected in p for p in problems), problems


def test_duplicate_id_points_at_first(labels_dir):
    first = read_labels(labels_dir).split("train")[0]
    rel = add(labels_dir, line(id=first.id, text=GOOD))
    problems = problems_for(labels_dir)
    assert any(p.startswith(f"labels/{rel}:1: duplicate id") and first.where in p
               for p in problems), problems


def test_near_duplicate_and_train_test_leak(labels_dir):
    victim = read_labels(labels_dir).split("train")[0]
    edited = victim.text.replace(".", "!", 1) + " And that was that."
    rel = add(labels_dir, line(id="leak-1", text=edited), split="test")
    problems = problems_for(labels_dir)
    assert any(p.startswith(f"labels/{rel}:1: train/test leak: near-duplicate of "
                            f"{victim.where}") for p in problems), problems


def test_too_few_positives(labels_dir):
    taxonomy = labels_dir / "taxonomy.yaml"
    taxonomy.write_text(taxonomy.read_text().replace("min_positives: 1", "min_positives: 999"))
    problems = problems_for(labels_dir)
    assert any("label 'deception' has" in p and "fewer than the minimum 999" in p
               for p in problems)


def test_check_command_exit_codes_and_writes_nothing(labels_dir, tmp_path):
    ok = run_cli("labels", "check", str(labels_dir))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rel = add(labels_dir, "{oops")
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    bad = run_cli("labels", "check", str(labels_dir))
    assert bad.returncode == 1
    assert f"labels/{rel}:1: invalid JSON".encode() in bad.stdout
    assert b"Traceback" not in bad.stderr
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


def test_stats_table_counts(labels_dir):
    table = stats_table(read_labels(labels_dir))
    assert "deception" in table and "(no label)" in table and "register" in table
    assert os.linesep in table or "\n" in table
