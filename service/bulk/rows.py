"""Reading rows for bulk scoring: which files a source holds, and rows from JSONL or
Parquet that carry their own error instead of raising, so a bad row is reported, not fatal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..text_checks import unencodable_at
from ..training.errors import TropesError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")


class ScoreError(TropesError):
    """A bulk-scoring problem: a bad input, row or output; the message says where."""


@dataclass
class Row:
    where: str  # file:line (JSONL) or file:row N (Parquet)
    record: dict | None
    raw: bytes | None  # the JSONL line without its newline; None for Parquet
    error: str | None = None


def file_format(path: str | Path) -> str:
    name = str(path).lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "jsonl"


def is_shard(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)


def list_shards(source: Path) -> list[Path]:
    """The shards of a folder (sorted), or the file itself; ScoreError when there are none."""
    source = Path(source)
    if not source.exists():
        raise ScoreError(f"input {source} does not exist")
    if not source.is_dir():
        return [source]
    shards = sorted(p for p in source.iterdir() if is_shard(p))
    if not shards:
        raise ScoreError(f"{source} holds no .jsonl or .parquet shards")
    return shards


def check_record(record, text_field: str) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if text_field not in record:
        return f"missing field '{text_field}'"
    text = record[text_field]
    if not isinstance(text, str):
        return f"field '{text_field}' must be a string, got {type(text).__name__}"
    if not text.strip():
        return f"field '{text_field}' is empty"
    if (bad := unencodable_at(text)) is not None:
        return (f"field '{text_field}' is not valid Unicode (a lone surrogate "
                f"U+{ord(text[bad]):04X} at character {bad}); the encoder cannot read it")
    return None


def jsonl_rows(handle, name: str, text_field: str, start: int = 0) -> Iterator[Row]:
    """Every row after the first `start`; bad rows carry their error, never raise."""
    for number, raw in enumerate(handle, 1):
        if number <= start:
            continue
        raw = raw.rstrip(b"\n").rstrip(b"\r")
        where = f"{name}:{number}"
        if not raw.strip():
            yield Row(where, None, raw, "empty line")
            continue
        try:
            record = json.loads(raw)
        except UnicodeDecodeError as exc:
            yield Row(where, None, raw, f"invalid UTF-8 at byte {exc.start}")
            continue
        except json.JSONDecodeError as exc:
            yield Row(where, None, raw, f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        yield Row(where, record, raw, check_record(record, text_field))


def parquet_rows(path: Path, text_field: str, start: int = 0) -> Iterator[Row]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        if number + batch.num_rows <= start:
            number += batch.num_rows
            continue
        for record in batch.to_pylist():
            number += 1
            if number > start:
                yield Row(f"{path}:row {number}", record, None,
                          check_record(record, text_field))


def count_rows(path: Path) -> int | None:
    """Total rows for the progress bar's ETA (a fast newline count for JSONL)."""
    try:
        if file_format(path) == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        with open(path, "rb") as handle:
            return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return None
