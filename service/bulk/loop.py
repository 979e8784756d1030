"""Bulk scoring: stream rows from JSONL or Parquet (a file, a folder of shards, or stdin),
add a `tropes` object to each, write to a temporary name and rename when complete.
An interrupted run resumes from a checkpoint without losing or duplicating rows."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..result import TagResult
from .rows import Row, ScoreError, count_rows, file_format, jsonl_rows, list_shards, parquet_rows
from .sinks import JsonlSink, ParquetSink


@dataclass
class ScoreStats:
    rows: int = 0
    scored: int = 0
    skipped: int = 0
    shards: int = 0
    errors: list[str] = field(default_factory=list)


class Checkpoint:
    """Sidecar beside the partial output: input rows done and output written."""

    def __init__(self, final: Path):
        self.path = final.with_name(final.name + ".progress")

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


@dataclass
class ScoreOptions:
    text_field: str = "text"
    id_field: str | None = None
    on_error: str = "fail"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    documents: bool = False
    chunk_rows: int = 256  # the CLI passes settings.chunk_rows (TROPES_CHUNK_ROWS)
    group_scores: bool = False  # the model has misaligned/aligned scores (Parquet columns)


Tagger = Callable[[list[str]], list[TagResult]]


def score_path(tag: Tagger, labels: list[str], source: str, output: str,
               options: ScoreOptions) -> ScoreStats:
    """Score a file, a folder of shards (into a folder), or '-' (stdin, JSONL)."""
    stats = ScoreStats()
    src = None if source == "-" else Path(source)
    if src is not None and src.is_dir():
        if output == "-":
            raise ScoreError("a folder of shards needs an output folder, not stdout")
        shards = list_shards(src)
        out_dir = Path(output)
        if out_dir.exists() and not out_dir.is_dir():
            raise ScoreError(f"output {output} is a file; a folder of shards needs a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        for shard in shards:
            final = out_dir / shard.name
            if options.resume and final.exists() and Checkpoint(final).read() is None:
                continue  # finished in an earlier run
            score_file(tag, labels, str(shard), str(final), options, stats)
            stats.shards += 1
        return stats
    if src is not None:
        list_shards(src)  # a clear error for a missing input
    score_file(tag, labels, source, output, options, stats)
    stats.shards = 1
    return stats


def _resume_state(final: Path | None, partial: Path | None, checkpoint, options):
    """(saved checkpoint or None, whether the output is already complete)."""
    if final is not None:
        if final.exists() and not options.overwrite and not options.resume:
            raise ScoreError(f"output {final} exists; pass --overwrite to replace it")
    if not options.resume:
        return None, False
    if final is None:
        raise ScoreError("--resume needs an output file, not stdout")
    saved = checkpoint.read()
    if saved is None and final.exists():
        return None, True
    if saved is not None and not partial.exists():
        saved = None  # the partial output is gone: start over
    return saved, False


def _open_rows(source: str, text_field: str, start: int):
    """(rows, total rows or None, open handle or None, Parquet input schema or None)."""
    if source == "-":
        return jsonl_rows(sys.stdin.buffer, "<stdin>", text_field, start), None, None, None
    if file_format(source) == "parquet":
        import pyarrow.parquet as pq

        return (parquet_rows(Path(source), text_field, start), count_rows(Path(source)), None,
                pq.read_schema(source))
    try:
        handle = open(source, "rb")
    except OSError as exc:
        raise ScoreError(f"cannot read {source}: {exc.strerror}") from None
    return jsonl_rows(handle, source, text_field, start), count_rows(Path(source)), handle, None


def _good_rows(chunk: list[Row], options, partial, done: int, stats: ScoreStats) -> list[Row]:
    """The rows to score; bad ones fail the run or are reported and counted as skipped."""
    good = []
    for row in chunk:
        if row.error is None:
            good.append(row)
            continue
        where = _where(row, options.id_field)
        if options.on_error == "fail":
            kept = (f"; rows before it are kept in {partial}: fix the row and rerun "
                    "with --resume" if partial and done else "")
            raise ScoreError(f"{where}: {row.error}{kept}")
        stats.skipped += 1
        stats.errors.append(f"{where}: {row.error}")
        print(f"skipped {where}: {row.error}", file=sys.stderr)
    return good


def _discard(partial: Path, checkpoint) -> None:
    if partial.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.unlink(missing_ok=True)
    checkpoint.remove()


def score_file(tag, labels, source: str, output: str, options: ScoreOptions,
               stats: ScoreStats) -> None:
    from tqdm import tqdm

    final = None if output == "-" else Path(output)
    if final is not None and source != "-" and Path(source).resolve() == final.resolve():
        raise ScoreError(f"output {output} is the input file; choose another name")
    partial = None if final is None else final.with_name(final.name + ".partial")
    checkpoint = Checkpoint(final) if final else None
    saved, complete = _resume_state(final, partial, checkpoint, options)
    if complete:
        return
    start = saved["rows"] if saved else 0
    skipped_in_other_files = stats.skipped
    stats.skipped += saved.get("skipped", 0) if saved else 0
    rows, total, handle, input_schema = _open_rows(source, options.text_field, start)
    if final is not None and file_format(final) == "parquet":
        sink = ParquetSink(partial, saved, labels, options.documents, input_schema,
                           options.group_scores)
    else:
        sink = JsonlSink(partial, saved)
    bar = tqdm(desc=f"scoring {Path(source).name if source != '-' else 'stdin'}", unit="row",
               total=total, initial=start, file=sys.stderr, disable=not options.progress,
               dynamic_ncols=True, smoothing=0.1)
    done = start
    try:
        while chunk := [row for _, row in zip(range(options.chunk_rows), rows)]:
            good = _good_rows(chunk, options, partial, done, stats)
            if good:
                sink.write(good, tag([row.record[options.text_field] for row in good]))
            done += len(chunk)
            stats.rows += len(chunk)
            stats.scored += len(good)
            bar.update(len(chunk))
            if checkpoint:
                checkpoint.write({"rows": done, "skipped": stats.skipped - skipped_in_other_files,
                                  **sink.state()})
        if final is not None:
            sink.finish(partial, final)
            checkpoint.remove()
    except ScoreError:
        if final is not None and done == 0:  # nothing worth resuming: leave no debris
            sink.close()
            _discard(partial, checkpoint)
        raise
    finally:
        bar.close()
        sink.close()
        if handle is not None:
            handle.close()


def _where(row: Row, id_field: str | None) -> str:
    if id_field and isinstance(row.record, dict) and id_field in row.record:
        return f"{row.where} ({id_field}={row.record[id_field]!r})"
    return row.where
