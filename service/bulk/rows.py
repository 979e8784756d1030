"""Reading rows for bulk scoring: which files a source holds, and rows from JSONL or
Parquet that carry their own error instead of raising, so a bad row is reported, not fatal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from ..text_checks import unencodable_at
from ..training.errors import TropesError


class ScoreError(TropesError):
    """A bulk-scoring problem: a bad input, row or output; the message says where."""


@dataclass
class Row:
    where: str  # file:line (JSONL) or file:row N (Parquet)
    record: dict | None
    raw: bytes | None  # the JSONL line without its newline; None for Parquet
    error: str | None = None


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


def parquet_rows(handle, where: str, text_field: str, start: int = 0) -> Iterator[Row]:
    """Rows of a Parquet file (any handle pyarrow can read) after the first `start`."""
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(handle).iter_batches(batch_size=1024):
        if number + batch.num_rows <= start:
            number += batch.num_rows
            continue
        for record in batch.to_pylist():
            number += 1
            if number > start:
                yield Row(f"{where}:row {number}", record, None,
                          check_record(record, text_field))
