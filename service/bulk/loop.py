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
from .fingerprint import HashedLines, check_resume, check_scored_rows, run_fingerprint
from .lock import OutputLock
from .rows import Row, ScoreError, count_rows, file_format, jsonl_rows, list_shards, parquet_rows
from .sinks import JsonlSink, ParquetSink, write_failed


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
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_failed(self.path, exc) from None

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
    model_version: str | None = None  # named in every row and the checkpoint's fingerprint
    threshold_profile: str | None = None


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
    """(rows, total rows or None, open handle or None, Parquet input schema or None,
    the hashed line reader of JSONL input or None)."""
    if source == "-":
        lines = HashedLines(sys.stdin.buffer, start)
        return jsonl_rows(lines, "<stdin>", text_field, start), None, None, None, lines
    if file_format(source) == "parquet":
        import pyarrow.parquet as pq

        return (parquet_rows(Path(source), text_field, start), count_rows(Path(source)), None,
                pq.read_schema(source), None)
    try:
        handle = open(source, "rb")
    except OSError as exc:
        raise ScoreError(f"cannot read {source}: {exc.strerror}") from None
    lines = HashedLines(handle, start)
    return (jsonl_rows(lines, source, text_field, start), count_rows(Path(source)), handle,
            None, lines)


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
    final = None if output == "-" else Path(output)
    if final is not None and source != "-" and Path(source).resolve() == final.resolve():
        raise ScoreError(f"output {output} is the input file; choose another name")
    if final is None:
        return _score_file_locked(tag, labels, source, final, options, stats)
    with OutputLock(final):  # held until OUT is complete: a second run is refused
        return _score_file_locked(tag, labels, source, final, options, stats)


def _tag_chunk(tag, good: list[Row], options: ScoreOptions) -> list[TagResult]:
    results = tag([row.record[options.text_field] for row in good])
    if options.model_version:
        for result in results:  # a remote tagger already named the model that answered
            result.extra.setdefault("model", options.model_version)
    return results


def _score_file_locked(tag, labels, source: str, final: Path | None, options: ScoreOptions,
                       stats: ScoreStats) -> None:
    from tqdm import tqdm

    partial = None if final is None else final.with_name(final.name + ".partial")
    checkpoint = Checkpoint(final) if final else None
    saved, complete = _resume_state(final, partial, checkpoint, options)
    if complete:
        return
    fingerprint = run_fingerprint(source, options)
    if saved:
        check_resume(saved, fingerprint, final)
    start = saved["rows"] if saved else 0
    skipped_in_other_files = stats.skipped
    stats.skipped += saved.get("skipped", 0) if saved else 0
    rows, total, handle, input_schema, lines = _open_rows(source, options.text_field, start)
    try:
        sink = _open_sink(final, partial, saved, labels, options, input_schema)
    except BaseException:
        if handle is not None:
            handle.close()
        raise
    bar = tqdm(desc=f"scoring {Path(source).name if source != '-' else 'stdin'}", unit="row",
               total=total, initial=start, file=sys.stderr, disable=not options.progress,
               dynamic_ncols=True, smoothing=0.1)
    done = start
    try:
        while True:
            chunk = [row for _, row in zip(range(options.chunk_rows), rows)]
            if saved and done == start and lines is not None:
                check_scored_rows(lines, saved, final, source if source != "-" else "stdin")
            if not chunk:
                break
            good = _good_rows(chunk, options, partial, done, stats)
            if good:
                sink.write(good, _tag_chunk(tag, good, options))
            done += len(chunk)
            stats.rows += len(chunk)
            stats.scored += len(good)
            bar.update(len(chunk))
            if checkpoint:
                checkpoint.write({"rows": done, "skipped": stats.skipped - skipped_in_other_files,
                                  "fingerprint": fingerprint, **sink.state(),
                                  **({"input_sha256": lines.hexdigest()} if lines else {})})
        if final is not None:
            sink.finish(partial, final)
            checkpoint.remove()
    except ScoreError as exc:
        if final is not None and done == 0:  # nothing worth resuming: leave no debris
            sink.close()
            _discard(partial, checkpoint)
        elif final is not None and (advice := _kept(exc, partial)):
            raise ScoreError(f"{exc}{advice}") from None
        raise
    finally:
        bar.close()
        sink.close()
        if handle is not None:
            handle.close()


def _open_sink(final, partial, saved, labels, options: ScoreOptions, input_schema):
    if final is not None and file_format(final) == "parquet":
        return ParquetSink(partial, saved, labels, options.documents, input_schema,
                           options.group_scores, model_version=options.model_version)
    return JsonlSink(partial, saved)


def _kept(exc: ScoreError, partial: Path) -> str:
    """The advice for a failed write (a bad row's message already has its own)."""
    if "rows before it are kept" in str(exc) or not str(exc).startswith("cannot write"):
        return ""
    return f"; rows before it are kept in {partial}: fix the cause and rerun with --resume"


def _where(row: Row, id_field: str | None) -> str:
    if id_field and isinstance(row.record, dict) and id_field in row.record:
        return f"{row.where} ({id_field}={row.record[id_field]!r})"
    return row.where
