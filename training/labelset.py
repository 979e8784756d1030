"""Labelled passages: read labels/{train,test}/*.jsonl, validate them, count them.

Every problem is reported as ``file:line: message``; nothing here writes a file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .taxonomy import Taxonomy, TaxonomyError, load_taxonomy

SPLITS = ("train", "test")
MAX_LINE_BYTES = 100_000
NEAR_DUPLICATE_CONTAINMENT = 0.5  # share of the shorter text's word trigrams found in the other
REQUIRED_FIELDS = ("id", "text", "labels", "register")


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    labels: tuple[str, ...]
    register: str
    split: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class LabelSet:
    taxonomy: Taxonomy
    passages: list[Passage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Passage]:
        return [p for p in self.passages if p.split == name]

    def matrix(self, name: str) -> tuple[list[str], np.ndarray]:
        """Texts and the 0/1 label matrix (rows = passages, columns = taxonomy order)."""
        rows = self.split(name)
        ids = self.taxonomy.ids
        y = np.zeros((len(rows), len(ids)), dtype=np.int8)
        for i, passage in enumerate(rows):
            for label in passage.labels:
                y[i, ids.index(label)] = 1
        return [p.text for p in rows], y

    def data_hash(self) -> str:
        """Hash of everything training reads: the taxonomy ids and every passage, in order."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.taxonomy.ids).encode())
        for p in sorted(self.passages, key=lambda p: (p.split, p.id)):
            record = [p.split, p.id, p.text, sorted(p.labels), p.register]
            digest.update(json.dumps(record, ensure_ascii=False).encode())
        return digest.hexdigest()


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


def _decode_line(raw: bytes, where: str) -> tuple[object, str | None]:
    """The JSON value of one line, or the one problem that stops it being read."""
    if len(raw) > MAX_LINE_BYTES:
        return None, f"{where}: line is {len(raw):,} bytes, over the {MAX_LINE_BYTES:,} limit"
    if raw.endswith(b"\r"):
        return None, f"{where}: CRLF line ending; save the file with LF (\\n) line endings"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"{where}: invalid UTF-8 at byte {exc.start}"
    if line.startswith("\ufeff"):
        return None, f"{where}: starts with a byte-order mark (BOM); save as UTF-8 without BOM"
    try:
        return json.loads(line), None
    except json.JSONDecodeError as exc:
        return None, f"{where}: invalid JSON: {exc.msg} (column {exc.colno})"


def _check_labels_field(labels, where: str, taxonomy: Taxonomy) -> list[str]:
    if labels is None:
        return [f"{where}: 'labels' is null: this passage came from 'tropes suggest' and has "
                "not been reviewed; set its labels (the model's guess is in 'guess'), then "
                "move it into train/ or test/"]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        return [f"{where}: field 'labels' must be a list of strings"]
    problems = [f"{where}: unknown label {label!r} (not in taxonomy.yaml)"
                for label in sorted(set(labels) - set(taxonomy.ids))]
    problems += [f"{where}: label {label!r} appears {n} times"
                 for label, n in Counter(labels).items() if n > 1]
    return problems


def _check_fields(record: dict, where: str, taxonomy: Taxonomy) -> list[str]:
    pid, text, labels, register = (record[k] for k in REQUIRED_FIELDS)
    problems = []
    if not isinstance(pid, str) or not pid.strip():
        problems.append(f"{where}: field 'id' must be a non-empty string")
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: field 'text' must be a non-empty string")
    else:
        words = len(text.split())
        if not taxonomy.min_words <= words <= taxonomy.max_words:
            problems.append(f"{where}: text has {words} words, outside "
                            f"{taxonomy.min_words}-{taxonomy.max_words}")
    problems += _check_labels_field(labels, where, taxonomy)
    if not isinstance(register, str) or not register:
        problems.append(f"{where}: field 'register' must be a non-empty string")
    elif taxonomy.registers and register not in taxonomy.registers:
        problems.append(f"{where}: unknown register {register!r} (see taxonomy.yaml)")
    return problems


def _parse_line(raw: bytes, where: str, taxonomy: Taxonomy) -> tuple[dict | None, list[str]]:
    record, problem = _decode_line(raw, where)
    if problem is not None:
        return None, [problem]
    if not isinstance(record, dict):
        return None, [f"{where}: expected a JSON object, got {type(record).__name__}"]
    problems = [f"{where}: missing field '{k}'" for k in REQUIRED_FIELDS if k not in record]
    if problems:
        return None, problems
    problems = _check_fields(record, where, taxonomy)
    return (None if problems else record), problems


def read_labels(labels_dir: Path) -> LabelSet:
    """Read and validate the whole folder; problems are collected, never raised."""
    labels_dir = Path(labels_dir)
    try:
        taxonomy = load_taxonomy(labels_dir / "taxonomy.yaml")
    except TaxonomyError as exc:
        return LabelSet(taxonomy=Taxonomy(labels=()), problems=[str(exc)])
    result = LabelSet(taxonomy=taxonomy)
    for split in SPLITS:
        files = sorted((labels_dir / split).glob("*.jsonl"))
        if not files:
            result.problems.append(f"{_rel(labels_dir / split, labels_dir)}: no .jsonl files")
        for path in files:
            name = _rel(path, labels_dir)
            with open(path, "rb") as handle:
                for number, raw in enumerate(handle, 1):
                    raw = raw.rstrip(b"\n")
                    if not raw.strip():
                        continue
                    record, problems = _parse_line(raw, f"{name}:{number}", taxonomy)
                    result.problems.extend(problems)
                    if record is not None:
                        result.passages.append(
                            Passage(
                                id=record["id"],
                                text=record["text"],
                                labels=tuple(record["labels"]),
                                register=record["register"],
                                split=split,
                                file=name,
                                line=number,
                            )
                        )
    result.problems.extend(_duplicate_ids(result.passages))
    result.problems.extend(_near_duplicates(result.passages))
    result.problems.extend(_too_few_positives(result))
    return result


def _duplicate_ids(passages: list[Passage]) -> list[str]:
    first: dict[str, Passage] = {}
    problems = []
    for p in passages:
        if p.id in first:
            problems.append(f"{p.where}: duplicate id {p.id!r} (first at {first[p.id].where})")
        else:
            first[p.id] = p
    return problems


def word_trigrams(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {" ".join(words[i : i + 3]) for i in range(max(len(words) - 2, 1))}


def _near_duplicates(passages: list[Passage]) -> list[str]:
    """Pairs whose word trigrams mostly overlap: copies, light edits, train/test leaks."""
    if len(passages) < 2:
        return []
    from scipy.sparse import csr_matrix

    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, p in enumerate(passages):
        for gram in word_trigrams(p.text):
            rows.append(i)
            cols.append(vocab.setdefault(gram, len(vocab)))
    x = csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                   shape=(len(passages), len(vocab)))
    sizes = np.asarray(x.sum(axis=1)).ravel()
    shared = (x @ x.T).tocoo()
    problems = []
    for i, j, n in zip(shared.row, shared.col, shared.data):
        if i >= j:
            continue
        containment = n / max(min(sizes[i], sizes[j]), 1)
        if containment >= NEAR_DUPLICATE_CONTAINMENT:
            a, b = passages[i], passages[j]
            kind = "train/test leak: " if a.split != b.split else ""
            what = "duplicate" if a.text.strip() == b.text.strip() else "near-duplicate"
            problems.append(
                f"{b.where}: {kind}{what} of {a.where} ({containment:.0%} of word trigrams shared)"
            )
    return sorted(problems)


def _too_few_positives(labels: LabelSet) -> list[str]:
    tax = labels.taxonomy
    problems = []
    for split, minimum in (("train", tax.min_positives), ("test", tax.min_test_positives)):
        counts = Counter(label for p in labels.split(split) for label in p.labels)
        for label in tax.ids:
            if counts[label] < minimum:
                problems.append(
                    f"labels/{split}: label {label!r} has {counts[label]} positives, "
                    f"fewer than the minimum {minimum}"
                )
    return problems


def stats_table(labels: LabelSet) -> str:
    """Counts per label, register and split, as a plain-text table."""
    def table(title: str, keys: list[str], count) -> list[str]:
        width = max([len(title)] + [len(k) for k in keys]) + 2
        lines = [f"{title:<{width}}{'train':>8}{'test':>8}{'total':>8}"]
        for key in keys:
            tr, te = count("train", key), count("test", key)
            lines.append(f"{key:<{width}}{tr:>8}{te:>8}{tr + te:>8}")
        return lines

    def n_label(split, key):
        if key == "(no label)":
            return sum(1 for p in labels.split(split) if not p.labels)
        if key == "passages":
            return len(labels.split(split))
        return sum(1 for p in labels.split(split) if key in p.labels)

    registers = sorted({p.register for p in labels.passages})
    out = table("label", [*labels.taxonomy.ids, "(no label)", "passages"], n_label)
    out.append("")
    out.append("share of positives that avoid the label's obvious words (taxonomy keywords):")
    for label in labels.taxonomy.labels:
        if not label.keywords:
            continue
        pattern = re.compile(label.keywords, re.IGNORECASE)
        positives = [p for p in labels.passages if label.id in p.labels]
        shown = sum(1 for p in positives if not pattern.search(p.text))
        out.append(f"  {label.id:<22}{shown:>6} / {len(positives):<6}"
                   f"{shown / max(len(positives), 1):>6.0%}")
    out.append("")
    out += table("register", registers,
                 lambda s, r: sum(1 for p in labels.split(s) if p.register == r))
    total = max(len(labels.passages), 1)
    top = Counter(p.register for p in labels.passages).most_common(1)
    if top:
        out.append(f"\n{len(registers)} registers; largest {top[0][0]} at {top[0][1] / total:.0%}")
    return "\n".join(out)
