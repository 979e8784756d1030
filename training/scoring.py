"""Bulk scoring: stream rows from JSONL or Parquet (a file, a folder of shards, or stdin),
add a `tropes` object to each, write to a temporary name and rename when complete.
An interrupted run resumes from a checkpoint without losing or duplicating rows."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHUNK_ROWS = 256
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")


class ScoreError(Exception):
    pass


@dataclass
class Row:
    where: str  # file:line (JSONL) or file:row N (Parquet)
    record: dict | None
    raw: bytes | None  # the JSONL line without its newline; None for Parquet
    error: str | None = None


@dataclass
class ScoreStats:
    rows: int = 0
    scored: int = 0
    skipped: int = 0
    shards: int = 0
    errors: list[str] = field(default_factory=list)


def file_format(path: str | Path) -> str:
    name = str(path).lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "jsonl"


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


# --- sources ------------------------------------------------------------------------------

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


# --- sinks --------------------------------------------------------------------------------

def splice_tropes(row: Row, tropes: dict) -> bytes:
    """Append the tropes object to the raw line so every other field stays byte-identical."""
    if row.raw is None or "tropes" in row.record or not row.raw.rstrip().endswith(b"}"):
        return json.dumps({**row.record, "tropes": tropes}, ensure_ascii=False).encode()
    payload = json.dumps(tropes, ensure_ascii=False, separators=(", ", ": ")).encode()
    body = row.raw.rstrip()[:-1].rstrip()
    sep = b", " if not body.endswith(b"{") else b""
    return body + sep + b'"tropes": ' + payload + b"}"


class JsonlSink:
    """Appends lines to the partial file; resume truncates a torn tail first."""

    def __init__(self, partial: Path | None, resume_state: dict | None):
        if partial is None:
            self.handle, self.owned = sys.stdout.buffer, False
            return
        self.owned = True
        offset = resume_state["bytes"] if resume_state else 0
        self.handle = open(partial, "r+b" if resume_state and partial.exists() else "wb")
        self.handle.truncate(offset)
        self.handle.seek(offset)

    def write(self, rows: list[Row], results: list[dict]) -> None:
        self.handle.write(b"".join(splice_tropes(r, t) + b"\n" for r, t in zip(rows, results)))
        self.handle.flush()
        if self.owned:
            os.fsync(self.handle.fileno())

    def state(self) -> dict:
        return {"bytes": self.handle.tell()} if self.owned else {}

    def finish(self, partial: Path, final: Path) -> None:
        if self.owned:
            self.handle.close()
            os.replace(partial, final)

    def close(self) -> None:
        if self.owned and not self.handle.closed:
            self.handle.close()


def tropes_arrow_type(labels: list[str], documents: bool):
    import pyarrow as pa

    fields = [("labels", pa.list_(pa.string())),
              ("scores", pa.struct([(lb, pa.float64()) for lb in labels])),
              ("portrayal", pa.string())]
    if documents:
        span = pa.struct([("start", pa.int64()), ("end", pa.int64())])
        hit = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])
        fields += [("passages", pa.list_(span)), ("evidence", pa.map_(pa.string(),
                                                                       pa.list_(hit)))]
    return pa.struct(fields)


def _arrow_tropes(result: dict, documents: bool) -> dict:
    out = {k: result[k] for k in ("labels", "scores", "portrayal")}
    if documents:
        out["passages"] = [{"start": p["start"], "end": p["end"]} for p in result["passages"]]
        out["evidence"] = list(result["evidence"].items())
    return out


class ParquetSink:
    """Each chunk becomes one part file in OUT.partial/; finish() streams the parts into
    OUT, so memory stays flat and a killed run keeps every completed part."""

    def __init__(self, partial: Path, resume_state: dict | None, labels: list[str],
                 documents: bool, input_schema=None):
        self.dir = partial
        self.dir.mkdir(parents=True, exist_ok=True)
        self.parts = resume_state["parts"] if resume_state else 0
        for stale in self.dir.glob("part-*.parquet"):  # parts past the checkpoint are torn
            if int(stale.stem.split("-")[1]) >= self.parts:
                stale.unlink()
        self.documents = documents
        self.tropes_type = tropes_arrow_type(labels, documents)
        self.schema = None
        if input_schema is not None:
            self.schema = self._with_tropes(input_schema)

    def _with_tropes(self, schema):
        import pyarrow as pa

        fields = [f for f in schema if f.name != "tropes"]
        return pa.schema(fields + [pa.field("tropes", self.tropes_type)])

    def write(self, rows: list[Row], results: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        records = [{**r.record, "tropes": _arrow_tropes(t, self.documents)}
                   for r, t in zip(rows, results)]
        if self.schema is None:
            plain = pa.Table.from_pylist([{k: v for k, v in rec.items() if k != "tropes"}
                                          for rec in records])
            self.schema = self._with_tropes(plain.schema)
        extra = {k for rec in records for k in rec} - set(self.schema.names)
        if extra:
            raise ScoreError(f"{rows[0].where}: field(s) {sorted(extra)} are not in the first "
                             "rows' schema; Parquet needs one schema (use JSONL output)")
        table = pa.Table.from_pylist(records, schema=self.schema)
        path = self.dir / f"part-{self.parts:06d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        self.parts += 1

    def state(self) -> dict:
        return {"parts": self.parts}

    def finish(self, partial: Path, final: Path) -> None:
        import pyarrow.parquet as pq

        tmp = final.with_name(final.name + ".tmp")
        parts = sorted(self.dir.glob("part-*.parquet"))
        writer = None
        try:
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            if writer is None:  # no rows at all: an empty file with the tropes column
                import pyarrow as pa

                schema = self.schema or pa.schema([pa.field("tropes", self.tropes_type)])
                writer = pq.ParquetWriter(tmp, schema)
        finally:
            if writer is not None:
                writer.close()
        os.replace(tmp, final)
        shutil.rmtree(self.dir)

    def close(self) -> None:
        pass


# --- the run --------------------------------------------------------------------------------

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
    chunk_rows: int = field(default_factory=lambda: int(os.environ.get("TROPES_CHUNK_ROWS",
                                                                       CHUNK_ROWS)))


def score_path(tag: Callable[[list[str]], list[dict]], labels: list[str], source: str,
               output: str, options: ScoreOptions) -> ScoreStats:
    """Score a file, a folder of shards (into a folder), or '-' (stdin, JSONL)."""
    stats = ScoreStats()
    src = None if source == "-" else Path(source)
    if src is not None and not src.exists():
        raise ScoreError(f"input {source} does not exist")
    if src is not None and src.is_dir():
        if output == "-":
            raise ScoreError("a folder of shards needs an output folder, not stdout")
        shards = sorted(p for p in src.iterdir()
                        if p.is_file() and p.name.lower().endswith(JSONL_SUFFIXES
                                                                   + PARQUET_SUFFIXES))
        if not shards:
            raise ScoreError(f"{source} holds no .jsonl or .parquet shards")
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
    score_file(tag, labels, source, output, options, stats)
    stats.shards = 1
    return stats


def score_file(tag, labels, source: str, output: str, options: ScoreOptions,
               stats: ScoreStats) -> None:
    from tqdm import tqdm

    to_stdout = output == "-"
    final = None if to_stdout else Path(output)
    out_format = "jsonl" if to_stdout else file_format(final)
    in_format = "jsonl" if source == "-" else file_format(source)
    if final is not None:
        if source != "-" and Path(source).resolve() == final.resolve():
            raise ScoreError(f"output {output} is the input file; choose another name")
        if final.exists() and not options.overwrite and not options.resume:
            raise ScoreError(f"output {output} exists; pass --overwrite to replace it")
    partial = None if to_stdout else final.with_name(final.name + ".partial")
    checkpoint = Checkpoint(final) if final else None
    saved = None
    if options.resume:
        if to_stdout:
            raise ScoreError("--resume needs an output file, not stdout")
        saved = checkpoint.read()
        if saved is None and final.exists():
            return  # already complete
        if saved is not None and not partial.exists():
            saved = None  # the partial output is gone: start over
    start = saved["rows"] if saved else 0
    skipped = saved.get("skipped", 0) if saved else 0
    if source == "-":
        rows = jsonl_rows(sys.stdin.buffer, "<stdin>", options.text_field, start)
        total, handle, input_schema = None, None, None
    elif in_format == "parquet":
        import pyarrow.parquet as pq

        rows = parquet_rows(Path(source), options.text_field, start)
        total, handle = count_rows(Path(source)), None
        input_schema = pq.read_schema(source)
    else:
        try:
            handle = open(source, "rb")
        except OSError as exc:
            raise ScoreError(f"cannot read {source}: {exc.strerror}") from None
        rows = jsonl_rows(handle, source, options.text_field, start)
        total, input_schema = count_rows(Path(source)), None
    if out_format == "parquet":
        sink = ParquetSink(partial, saved, labels, options.documents, input_schema)
    else:
        sink = JsonlSink(partial, saved)
    bar = tqdm(desc=f"scoring {Path(source).name if source != '-' else 'stdin'}", unit="row",
               total=total, initial=start, file=sys.stderr, disable=not options.progress,
               dynamic_ncols=True, smoothing=0.1)
    done = start
    try:
        while True:
            chunk = [row for _, row in zip(range(options.chunk_rows), rows)]
            if not chunk:
                break
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
                skipped += 1
                stats.errors.append(f"{where}: {row.error}")
                print(f"skipped {where}: {row.error}", file=sys.stderr)
            results = tag([row.record[options.text_field] for row in good]) if good else []
            if good:
                sink.write(good, results)
            done += len(chunk)
            stats.rows += len(chunk)
            stats.scored += len(good)
            bar.update(len(chunk))
            if checkpoint:
                checkpoint.write({"rows": done, "skipped": skipped, **sink.state()})
        if final is not None:
            sink.finish(partial, final)
            checkpoint.remove()
    except ScoreError:
        if final is not None and done == 0:  # nothing worth resuming: leave no debris
            sink.close()
            shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else \
                partial.unlink(missing_ok=True)
            checkpoint.remove()
        raise
    finally:
        bar.close()
        sink.close()
        if handle is not None:
            handle.close()
    stats.skipped += skipped


def _where(row: Row, id_field: str | None) -> str:
    if id_field and isinstance(row.record, dict) and id_field in row.record:
        return f"{row.where} ({id_field}={row.record[id_field]!r})"
    return row.where
