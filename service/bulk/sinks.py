"""Where scored rows go: JSONL lines with the tropes object spliced in byte-for-byte, or
Parquet parts merged at the end. Both write to OUT.partial and rename when complete."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from ..result import TagResult, arrow_type
from .rows import Row, ScoreError


def splice_tropes(row: Row, result: TagResult) -> bytes:
    """Append the tropes object to the raw line so every other field stays byte-identical."""
    tropes = result.to_dict()
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

    def write(self, rows: list[Row], results: list[TagResult]) -> None:
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


class ParquetSink:
    """Each chunk becomes one part file in OUT.partial/; finish() streams the parts into
    OUT, so memory stays flat and a killed run keeps every completed part."""

    def __init__(self, partial: Path, resume_state: dict | None, labels: list[str],
                 documents: bool, input_schema=None, groups: bool = False):
        self.dir = partial
        self.dir.mkdir(parents=True, exist_ok=True)
        self.parts = resume_state["parts"] if resume_state else 0
        for stale in self.dir.glob("part-*.parquet"):  # parts past the checkpoint are torn
            if int(stale.stem.split("-")[1]) >= self.parts:
                stale.unlink()
        self.documents = documents
        self.tropes_type = arrow_type(labels, documents, groups)
        self.schema = None
        if input_schema is not None:
            self.schema = self._with_tropes(input_schema)

    def _with_tropes(self, schema):
        import pyarrow as pa

        fields = [f for f in schema if f.name != "tropes"]
        return pa.schema(fields + [pa.field("tropes", self.tropes_type)])

    def write(self, rows: list[Row], results: list[TagResult]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        records = [{**r.record, "tropes": t.to_arrow(self.documents)}
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
