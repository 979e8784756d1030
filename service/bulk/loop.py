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
from .rows import Row, ScoreError, jsonl_rows, parquet_rows
from .select import RowSelector, weight_of
from .sinks import JsonlSink, ParquetSink, write_failed
from .sources import (
    Shard,
    ShardName,
    count_rows,
    decompressed,
    is_folder,
    is_url,
    lines_of,
    list_shards,
)

JSONL_CODECS = ("gzip", "zstd")
PARQUET_CODECS = ("none", "gzip", "zstd", "snappy", "lz4", "brotli")


@dataclass
class ScoreStats:
    rows: int = 0
    scored: int = 0
    skipped: int = 0
    dropped: int = 0  # scored, then left out by --keep/--drop
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
    compression: str | None = None  # None: keep each shard's; "none" or a codec
    output_format: str | None = None  # None: OUT's name, or each shard's own format
    selector: RowSelector | None = None
    weight: bool = False
    weight_floor: float = 0.1
    label_groups: dict[str, str] = field(default_factory=dict)  # label id -> its group


@dataclass(frozen=True)
class OutputPlan:
    format: str  # "jsonl" or "parquet"
    compression: str | None  # JSONL: "gzip", "zstd" or None; Parquet: its codec or None


def jsonl_codec(compression: str | None, where: str) -> str | None:
    if compression in (None, "none"):
        return None
    if compression not in JSONL_CODECS:
        raise ScoreError(f"--compression {compression} is a Parquet codec; JSONL output "
                         f"({where}) takes gzip, zstd or none")
    return compression


def file_plan(output: str, options: ScoreOptions) -> OutputPlan:
    """A single output file: its name decides format and compression; --compression must
    agree with the name, so a `.jsonl` file never holds zstd bytes."""
    if output == "-":
        if options.output_format == "parquet":
            raise ScoreError("Parquet output needs a file name, not stdout")
        return OutputPlan("jsonl", jsonl_codec(options.compression, "stdout"))
    name = ShardName.parse(Path(output).name)
    fmt = name.format or "jsonl"
    if options.output_format and options.output_format != fmt:
        raise ScoreError(f"--output-format {options.output_format} disagrees with the output "
                         f"name {output}; name it {name.renamed(options.output_format, None)}")
    if fmt == "parquet":
        return OutputPlan("parquet", options.compression)
    wanted = jsonl_codec(options.compression, output)
    if options.compression is not None and wanted != name.compression:
        raise ScoreError(f"--compression {options.compression} disagrees with the output name "
                         f"{output}; name it {name.renamed('jsonl', wanted)}")
    return OutputPlan("jsonl", name.compression)


def shard_plan(shard: Shard, options: ScoreOptions) -> tuple[str, OutputPlan]:
    """A shard's output name and plan: its own format and compression unless told."""
    name = ShardName.parse(shard.name)
    fmt = options.output_format or shard.format
    if fmt == "parquet":
        return name.renamed("parquet", None), OutputPlan("parquet", options.compression)
    codec = name.compression if options.compression is None else \
        jsonl_codec(options.compression, shard.where)
    return name.renamed("jsonl", codec), OutputPlan("jsonl", codec)


def folder_outputs(shards: list[Shard], out_dir: Path, options: ScoreOptions):
    """(shard, output path, plan) for each shard; two shards that would write one output
    name (a.jsonl and a.jsonl.gz into zstd) are refused before anything is scored."""
    planned, seen = [], {}
    for shard in shards:
        name, plan = shard_plan(shard, options)
        if name in seen:
            raise ScoreError(f"{seen[name]} and {shard.where} would both be written to "
                             f"{out_dir / name}; score them separately")
        seen[name] = shard.where
        planned.append((shard, out_dir / name, plan))
    return planned


def local_output(output: str) -> str:
    """Outputs are local files (locks, checkpoints and renames need a real file system)."""
    if output.startswith("file://"):
        return output[len("file://"):]
    if is_url(output):
        raise ScoreError(f"cannot write to {output}: write to a local path, then copy the "
                         "finished output (inputs may be URLs, outputs may not)")
    return output


Tagger = Callable[[list[str]], list[TagResult]]


def score_path(tag: Tagger, labels: list[str], source: str, output: str,
               options: ScoreOptions) -> ScoreStats:
    """Score a file, a folder of shards (into a folder), or '-' (stdin, JSONL)."""
    stats = ScoreStats()
    output = local_output(output)
    if is_folder(source):
        if output == "-":
            raise ScoreError("a folder of shards needs an output folder, not stdout")
        shards = list_shards(source)
        out_dir = Path(output)
        if out_dir.exists() and not out_dir.is_dir():
            raise ScoreError(f"output {output} is a file; a folder of shards needs a folder")
        planned = folder_outputs(shards, out_dir, options)
        out_dir.mkdir(parents=True, exist_ok=True)
        for shard, final, plan in planned:
            if options.resume and final.exists() and Checkpoint(final).read() is None:
                continue  # finished in an earlier run
            score_shard(tag, labels, shard, final, plan, options, stats)
            stats.shards += 1
        return stats
    shard = None if source == "-" else list_shards(source)[0]
    final = None if output == "-" else Path(output)
    score_shard(tag, labels, shard, final, file_plan(output, options), options, stats)
    stats.shards = 1
    return stats


def score_file(tag: Tagger, labels: list[str], source: str, output: str,
               options: ScoreOptions, stats: ScoreStats) -> None:
    """One input file (or '-') into one output file (or '-')."""
    output = local_output(output)
    shard = None if source == "-" else list_shards(source)[0]
    score_shard(tag, labels, shard, None if output == "-" else Path(output),
                file_plan(output, options), options, stats)


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


def _open_rows(shard: Shard | None, text_field: str, start: int):
    """(rows, total rows or None, open handle or None, Parquet input schema or None,
    the hashed line reader of JSONL input or None)."""
    if shard is None:
        plain = decompressed(sys.stdin.buffer, "<stdin>")
        lines = HashedLines(lines_of(plain, "<stdin>"), start)
        return jsonl_rows(lines, "<stdin>", text_field, start), None, None, None, lines
    if shard.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        handle = shard.open_raw()
        try:
            schema = pq.ParquetFile(handle).schema_arrow
        except (pa.ArrowException, OSError, ValueError) as exc:
            handle.close()
            raise ScoreError(f"cannot read {shard.where} as Parquet: {exc}") from None
        return (parquet_rows(handle, shard.where, text_field, start), count_rows(shard),
                handle, schema, None)
    handle = shard.open_lines()
    lines = HashedLines(lines_of(handle, shard.where), start)
    return (jsonl_rows(lines, shard.where, text_field, start), count_rows(shard), handle,
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


def score_shard(tag, labels, shard: Shard | None, final: Path | None, plan: OutputPlan,
                options: ScoreOptions, stats: ScoreStats) -> None:
    """One shard (None: stdin) into one output file (None: stdout)."""
    if final is not None and shard is not None and shard.local_path is not None and \
            Path(shard.local_path).resolve() == final.resolve():
        raise ScoreError(f"output {final} is the input file; choose another name")
    if final is None:
        return _score_locked(tag, labels, shard, final, plan, options, stats)
    with OutputLock(final):  # held until OUT is complete: a second run is refused
        return _score_locked(tag, labels, shard, final, plan, options, stats)


def _tag_chunk(tag, good: list[Row], options: ScoreOptions):
    """(rows to write, their results, rows dropped by the selection)."""
    results = tag([row.record[options.text_field] for row in good])
    for result in results:
        if options.model_version:  # a remote tagger already named the model that answered
            result.extra.setdefault("model", options.model_version)
        if options.weight:
            result.extra["weight"] = weight_of(result, options.label_groups,
                                               options.weight_floor)
    if options.selector is None:
        return good, results, 0
    kept = [(row, result) for row, result in zip(good, results)
            if options.selector.wants(result)]
    return [r for r, _ in kept], [t for _, t in kept], len(good) - len(kept)


def _score_chunk(tag, chunk: list[Row], sink, options: ScoreOptions, partial, done: int,
                 stats: ScoreStats) -> None:
    good = _good_rows(chunk, options, partial, done, stats)
    if good:
        kept, results, dropped = _tag_chunk(tag, good, options)
        stats.dropped += dropped
        if kept:
            sink.write(kept, results)
    stats.rows += len(chunk)
    stats.scored += len(good)


def _score_locked(tag, labels, shard: Shard | None, final: Path | None, plan: OutputPlan,
                  options: ScoreOptions, stats: ScoreStats) -> None:
    from tqdm import tqdm

    partial = None if final is None else final.with_name(final.name + ".partial")
    checkpoint = Checkpoint(final) if final else None
    saved, complete = _resume_state(final, partial, checkpoint, options)
    if complete:
        return
    fingerprint = run_fingerprint(shard, plan, options)
    if saved:
        check_resume(saved, fingerprint, final)
    start = saved["rows"] if saved else 0
    before = (stats.skipped, stats.dropped)  # counts of the shards scored before this one
    stats.skipped += saved.get("skipped", 0) if saved else 0
    stats.dropped += saved.get("dropped", 0) if saved else 0
    rows, total, handle, input_schema, lines = _open_rows(shard, options.text_field, start)
    source = shard.where if shard is not None else "stdin"
    try:
        sink = _open_sink(final, partial, saved, labels, options, input_schema, plan)
    except BaseException:
        if handle is not None:
            handle.close()
        raise
    bar = tqdm(desc=f"scoring {shard.name if shard is not None else 'stdin'}", unit="row",
               total=total, initial=start, file=sys.stderr, disable=not options.progress,
               dynamic_ncols=True, smoothing=0.1)
    done = start
    try:
        while True:
            chunk = [row for _, row in zip(range(options.chunk_rows), rows)]
            if saved and done == start and lines is not None:
                check_scored_rows(lines, saved, final, source)
            if not chunk:
                break
            _score_chunk(tag, chunk, sink, options, partial, done, stats)
            done += len(chunk)
            bar.update(len(chunk))
            if checkpoint:
                checkpoint.write({"rows": done, "skipped": stats.skipped - before[0],
                                  "dropped": stats.dropped - before[1],
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


def _open_sink(final, partial, saved, labels, options: ScoreOptions, input_schema,
               plan: OutputPlan):
    if plan.format == "parquet":
        return ParquetSink(partial, saved, labels, options.documents, input_schema,
                           options.group_scores, model_version=options.model_version,
                           codec=plan.compression, weight=options.weight)
    return JsonlSink(partial, saved, plan.compression)


def _kept(exc: ScoreError, partial: Path) -> str:
    """The advice for a failed write (a bad row's message already has its own)."""
    if "rows before it are kept" in str(exc) or not str(exc).startswith("cannot write"):
        return ""
    return f"; rows before it are kept in {partial}: fix the cause and rerun with --resume"


def _where(row: Row, id_field: str | None) -> str:
    if id_field and isinstance(row.record, dict) and id_field in row.record:
        return f"{row.where} ({id_field}={row.record[id_field]!r})"
    return row.where
