"""Bulk scoring of JSONL files: stream rows in chunks, add a `tropes` object to each, write
to a temporary name and rename when complete. Interrupted runs resume from a checkpoint."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHUNK_ROWS = 256


class ScoreError(Exception):
    pass


@dataclass
class Row:
    where: str  # file:line
    record: dict | None
    raw: bytes  # the input line without its newline
    error: str | None = None


@dataclass
class ScoreStats:
    rows: int = 0
    scored: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def read_jsonl_rows(handle, name: str, text_field: str, start: int = 0) -> Iterator[Row]:
    """Yield every row from line start+1 on; bad rows carry their error, never raise."""
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
    return None


def splice_tropes(row: Row, tropes: dict) -> bytes:
    """Append the tropes object to the raw line so every other field stays byte-identical."""
    payload = json.dumps(tropes, ensure_ascii=False, separators=(", ", ": ")).encode()
    raw = row.raw.rstrip()
    if "tropes" in row.record or not raw.endswith(b"}"):
        merged = {**row.record, "tropes": tropes}
        return json.dumps(merged, ensure_ascii=False).encode()
    body = raw[:-1].rstrip()
    sep = b", " if not body.endswith(b"{") else b""
    return body + sep + b'"tropes": ' + payload + b"}"


class Checkpoint:
    """Sidecar beside the partial output: input rows done and output bytes written."""

    def __init__(self, partial: Path):
        self.path = partial.with_name(partial.name + ".progress")

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write(self, state: dict) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def score_jsonl(tag: Callable[[list[str]], list[dict]], source: str, output: str,
                text_field: str = "text", on_error: str = "fail", resume: bool = False,
                overwrite: bool = False, progress: bool = True,
                chunk_rows: int = CHUNK_ROWS) -> ScoreStats:
    """Score `source` (a path or '-') into `output` (a path or '-')."""
    from tqdm import tqdm

    to_stdout = output == "-"
    out_path = None if to_stdout else Path(output)
    if out_path is not None:
        if source != "-" and Path(source).resolve() == out_path.resolve():
            raise ScoreError(f"output {output} is the input file; choose another name")
        if out_path.exists() and not overwrite and not resume:
            raise ScoreError(f"output {output} exists; pass --overwrite to replace it")
    partial = None if to_stdout else out_path.with_name(out_path.name + ".partial")
    checkpoint = Checkpoint(partial) if partial else None
    state = {"rows": 0, "bytes": 0, "skipped": 0}
    if resume:
        if to_stdout:
            raise ScoreError("--resume needs an output file, not stdout")
        saved = checkpoint.read()
        if saved is not None and partial.exists():
            state = saved
        elif out_path.exists():
            raise ScoreError(f"output {output} is already complete; nothing to resume")
    if source == "-":
        handle, name = sys.stdin.buffer, "<stdin>"
    else:
        try:
            handle, name = open(source, "rb"), source
        except OSError as exc:
            raise ScoreError(f"cannot read {source}: {exc.strerror}") from None
    stats = ScoreStats(rows=state["rows"], skipped=state["skipped"])
    if to_stdout:
        sink = sys.stdout.buffer
    else:
        partial.parent.mkdir(parents=True, exist_ok=True)
        sink = open(partial, "r+b" if resume and partial.exists() else "wb")
        sink.truncate(state["bytes"])  # drop a torn tail left by a killed run
        sink.seek(state["bytes"])
    bar = tqdm(desc="scoring", unit="row", initial=stats.rows, file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        rows = read_jsonl_rows(handle, name, text_field, start=state["rows"])
        while True:
            chunk = [row for _, row in zip(range(chunk_rows), rows)]
            if not chunk:
                break
            good = []
            for row in chunk:
                if row.error is None:
                    good.append(row)
                elif on_error == "fail":
                    kept = (f"; rows before it are kept in {partial}: fix the row and rerun "
                            "with --resume" if partial else "")
                    raise ScoreError(f"{row.where}: {row.error}{kept}")
                else:
                    stats.skipped += 1
                    stats.errors.append(f"{row.where}: {row.error}")
                    print(f"skipped {row.where}: {row.error}", file=sys.stderr)
            results = tag([row.record[text_field] for row in good]) if good else []
            block = b"".join(splice_tropes(row, r) + b"\n" for row, r in zip(good, results))
            sink.write(block)
            sink.flush()
            stats.rows += len(chunk)
            stats.scored += len(good)
            bar.update(len(chunk))
            if checkpoint:
                os.fsync(sink.fileno())
                checkpoint.write({"rows": stats.rows, "bytes": sink.tell(),
                                  "skipped": stats.skipped})
    finally:
        bar.close()
        if handle is not sys.stdin.buffer:
            handle.close()
        if not to_stdout:
            sink.close()
    if partial is not None:
        os.replace(partial, out_path)
        checkpoint.remove()
    return stats
