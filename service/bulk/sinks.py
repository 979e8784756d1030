"""Where scored rows go: JSONL lines with the tropes object spliced in byte-for-byte, or
Parquet parts merged at the end. Both write to OUT.partial and rename when complete."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
from pathlib import Path

from ..result import FLAT_PREFIX, TagResult, arrow_type, flat_columns, flat_fields
from .rows import Row, ScoreError


def write_failed(target, exc: OSError) -> ScoreError:
    """An operating-system write failure (full disk, read-only mount, file too large) as
    the clear error the CLI prints."""
    return ScoreError(f"cannot write {target}: {exc.strerror or exc}")


def _reserialised(record: dict) -> bytes:
    text = json.dumps(record, ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate in a passed-through field: keep it escaped
        return json.dumps(record).encode()


def splice_tropes(row: Row, result: TagResult) -> bytes:
    """Append the tropes object to the raw line so every other field stays byte-identical."""
    tropes = result.to_dict()
    if row.raw is None or "tropes" in row.record or not row.raw.rstrip().endswith(b"}"):
        return _reserialised({**row.record, "tropes": tropes})
    payload = json.dumps(tropes, ensure_ascii=False, separators=(", ", ": ")).encode()
    body = row.raw.rstrip()[:-1].rstrip()
    sep = b", " if not body.endswith(b"{") else b""
    return body + sep + b'"tropes": ' + payload + b"}"


def compress_chunk(data: bytes, compression: str | None) -> bytes:
    """One gzip member or zstd frame per chunk: concatenated, they are one valid stream, and
    every checkpoint falls on a member boundary, so compressed output resumes row by row."""
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


class JsonlSink:
    """Appends lines to the partial file; resume truncates a torn tail first."""

    def __init__(self, partial: Path | None, resume_state: dict | None,
                 compression: str | None = None):
        self.compression = compression
        if partial is None:
            self.handle, self.owned = sys.stdout.buffer, False
            return
        self.owned = True
        offset = resume_state["bytes"] if resume_state else 0
        self.handle = open(partial, "r+b" if resume_state and partial.exists() else "wb")
        self.handle.truncate(offset)
        self.handle.seek(offset)

    def write(self, rows: list[Row], results: list[TagResult]) -> None:
        data = compress_chunk(b"".join(splice_tropes(r, t) + b"\n"
                                       for r, t in zip(rows, results)), self.compression)
        try:
            self.handle.write(data)
            self.handle.flush()
            if self.owned:
                os.fsync(self.handle.fileno())
        except OSError as exc:
            if not self.owned:
                silence_stdout()
                raise write_failed("standard output", exc) from None
            raise write_failed(self.handle.name, exc) from None

    def state(self) -> dict:
        return {"bytes": self.handle.tell()} if self.owned else {}

    def finish(self, partial: Path, final: Path) -> None:
        if self.owned:
            self.handle.close()
            os.replace(partial, final)

    def close(self) -> None:
        if self.owned and not self.handle.closed:
            try:
                self.handle.close()
            except OSError:
                pass  # the write that failed has been reported already


def silence_stdout() -> None:
    """After stdout failed (a full disk, a closed pipe), point it at /dev/null so the data
    still buffered does not fail again, with a traceback, when the interpreter exits."""
    try:
        target = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file (an in-process test runner): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, target)
    finally:
        os.close(devnull)


class ParquetSink:
    """Each chunk becomes one part file in OUT.partial/; finish() streams the parts into
    OUT, so memory stays flat and a killed run keeps every completed part."""

    def __init__(self, partial: Path, resume_state: dict | None, labels: list[str],
                 documents: bool, input_schema=None, groups: bool = False,
                 model_version: str | None = None, codec: str | None = None,
                 weight: bool = False):
        self.dir = partial
        self.codec = codec or "snappy"  # pyarrow's default; "none" writes uncompressed
        self.labels, self.groups, self.weight = labels, groups, weight
        self.model_version = model_version  # in the file's metadata: tropes.model
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_failed(self.dir, exc) from None
        self.parts = resume_state["parts"] if resume_state else 0
        for stale in self.dir.glob("part-*.parquet"):  # parts past the checkpoint are torn
            if int(stale.stem.split("-")[1]) >= self.parts:
                stale.unlink()
        self.documents = documents
        self.tropes_type = arrow_type(labels, documents, groups)
        self.flat = flat_fields(labels, groups, weight)
        self.schema = None
        if input_schema is not None:
            self.schema = self._with_tropes(input_schema)

    def _with_tropes(self, schema):
        import pyarrow as pa

        # a rescored file's own tropes columns are replaced, not duplicated
        fields = [f for f in schema if f.name != "tropes" and not f.name.startswith(FLAT_PREFIX)]
        return pa.schema(fields + [pa.field("tropes", self.tropes_type)] + self.flat)

    def write(self, rows: list[Row], results: list[TagResult]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        records = [{**{k: v for k, v in r.record.items() if not k.startswith(FLAT_PREFIX)},
                    "tropes": t.to_arrow(self.documents),
                    **flat_columns(t, self.labels, self.groups, self.weight)}
                   for r, t in zip(rows, results)]
        if self.schema is None:
            plain = [{k: v for k, v in rec.items()
                      if k != "tropes" and not k.startswith(FLAT_PREFIX)} for rec in records]
            try:
                inferred = pa.Table.from_pylist(plain).schema
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                inferred = pa.Table.from_pylist(plain[:1]).schema  # _table names the misfit
            self.schema = self._with_tropes(inferred)
        extra = {k for rec in records for k in rec} - set(self.schema.names)
        if extra:
            raise ScoreError(f"{rows[0].where}: field(s) {sorted(extra)} are not in the first "
                             "rows' schema; Parquet needs one schema (use JSONL output)")
        table = self._table(rows, records)
        path = self.dir / f"part-{self.parts:06d}.parquet"
        tmp = path.with_suffix(".tmp")
        try:
            pq.write_table(table, tmp, compression=self.codec)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_failed(path, exc) from None
        self.parts += 1

    def _table(self, rows: list[Row], records: list[dict]):
        """The chunk as one table of the run's schema, or a ScoreError naming the first row
        whose values do not fit it (an id that is a number in one row, a string in the next)."""
        import pyarrow as pa

        try:
            return pa.Table.from_pylist(records, schema=self.schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as whole:
            for row, record in zip(rows, records):
                try:
                    pa.Table.from_pylist([record], schema=self.schema)
                except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                    raise ScoreError(f"{row.where}: this row does not fit the Parquet schema "
                                     f"of the rows before it ({exc}); give every row's fields "
                                     "one type, or write JSONL") from None
            raise ScoreError(f"{rows[0].where}: rows cannot be written to Parquet ({whole})"
                             ) from None

    def state(self) -> dict:
        return {"parts": self.parts}

    def _named(self, schema):
        if not self.model_version:
            return schema
        return schema.with_metadata({**(schema.metadata or {}),
                                     b"tropes.model": self.model_version.encode()})

    def finish(self, partial: Path, final: Path) -> None:
        import pyarrow.parquet as pq

        tmp = final.with_name(final.name + ".tmp")
        parts = sorted(self.dir.glob("part-*.parquet"))
        writer = None
        try:
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, self._named(table.schema),
                                              compression=self.codec)
                writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
            if writer is None:  # no rows at all: an empty file with the tropes column
                import pyarrow as pa

                schema = self.schema or pa.schema([pa.field("tropes", self.tropes_type)]
                                                  + self.flat)
                writer = pq.ParquetWriter(tmp, self._named(schema), compression=self.codec)
            done, writer = writer, None
            done.close()
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_failed(final, exc) from None
        finally:
            if writer is not None:
                writer.close()
        shutil.rmtree(self.dir)

    def close(self) -> None:
        pass
