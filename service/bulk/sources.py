"""Where bulk input comes from: a file, a folder of shards, or an fsspec URL of either
(`file://`, `memory://`, `s3://` when s3fs is installed, ...). A shard is JSONL (optionally
gzip- or zstd-compressed) or Parquet (any codec pyarrow reads). Compression is read from the
first bytes, not the name, so a mislabelled `.jsonl` that is really gzip still reads."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from .rows import ScoreError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
# JSONL compression: file suffix -> codec name; the magic bytes decide when reading
COMPRESSION_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
SUFFIX_OF = {"gzip": ".gz", "zstd": ".zst"}
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SHARD_KINDS = ".jsonl, .jsonl.gz, .jsonl.zst or .parquet"


@dataclass(frozen=True)
class ShardName:
    """A shard's file name read as stem + format suffix + compression suffix."""

    stem: str
    format: str | None  # "jsonl", "parquet", or None when the name says neither
    compression: str | None  # "gzip", "zstd" or None (JSONL only)

    @classmethod
    def parse(cls, name: str) -> ShardName:
        lower = name.lower()
        compression = None
        for suffix, codec in COMPRESSION_SUFFIXES.items():
            if lower.endswith(suffix):
                compression = codec
                name, lower = name[:-len(suffix)], lower[:-len(suffix)]
                break
        for suffix in JSONL_SUFFIXES:
            if lower.endswith(suffix):
                return cls(name[:-len(suffix)], "jsonl", compression)
        for suffix in PARQUET_SUFFIXES:
            if lower.endswith(suffix) and compression is None:
                return cls(name[:-len(suffix)], "parquet", None)
        return cls(name, None, compression)

    def renamed(self, output_format: str, compression: str | None) -> str:
        if output_format == "parquet":
            return f"{self.stem}.parquet"
        return f"{self.stem}.jsonl{SUFFIX_OF.get(compression, '')}"


def is_url(source: str) -> bool:
    return "://" in source


def filesystem(source: str):
    """(fsspec filesystem, path inside it) for a local path or a URL."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(source)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package missing
        raise ScoreError(f"cannot read {source}: {exc}") from None


@dataclass
class Shard:
    fs: object  # an fsspec filesystem
    path: str  # the path inside fs
    where: str  # how messages name it: the path as given, or its URL

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def format(self) -> str:
        return ShardName.parse(self.name).format or "jsonl"

    @property
    def local_path(self) -> str | None:
        """The path on this machine, when the shard is a local file."""
        protocol = self.fs.protocol
        protocols = protocol if isinstance(protocol, (tuple, list)) else (protocol,)
        return self.path if {"file", "local"} & set(protocols) else None

    def open_raw(self):
        try:
            return self.fs.open(self.path, "rb")
        except OSError as exc:
            raise ScoreError(f"cannot read {self.where}: {exc.strerror or exc}") from None

    def info(self) -> dict:
        """Size and modification time, for the resume fingerprint."""
        try:
            info = self.fs.info(self.path)
        except OSError as exc:
            raise ScoreError(f"cannot read {self.where}: {exc.strerror or exc}") from None
        changed = info.get("mtime") or info.get("LastModified") or info.get("created")
        return {"size": info.get("size"), "modified": str(changed)}

    def open_lines(self):
        """A binary handle of the decompressed JSONL bytes (close it when done)."""
        return decompressed(self.open_raw(), self.where)


def sniff(handle) -> str | None:
    """The compression of a buffered binary handle, from its first bytes (not consumed)."""
    head = handle.peek(4)[:4]
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


def decompressed(raw, where: str):
    """Wrap a binary handle so reading gives plain bytes, whatever the compression."""
    buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    codec = sniff(buffered)
    if codec == "gzip":
        return gzip.GzipFile(fileobj=buffered, mode="rb")
    if codec == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True,
                                                            closefd=True)
        return io.BufferedReader(reader)
    return buffered


DECOMPRESS_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def lines_of(handle, where: str) -> Iterator[bytes]:
    """The handle's lines; a torn or corrupt compressed stream becomes a ScoreError that
    names the last good line instead of a zlib/zstd traceback."""
    import zstandard

    number = 0
    iterator = iter(handle)
    while True:
        try:
            line = next(iterator)
        except StopIteration:
            return
        except (*DECOMPRESS_ERRORS, zstandard.ZstdError) as exc:
            raise ScoreError(f"{where}: cannot decompress after line {number} ({exc}); "
                             "the file is truncated or corrupt") from None
        number += 1
        yield line


def list_shards(source: str) -> list[Shard]:
    """The shards of a folder (sorted by name, mixed formats and compressions allowed), or
    the file itself; ScoreError when there are none."""
    fs, path = filesystem(source)
    try:
        exists = fs.exists(path)
        folder = exists and fs.isdir(path)
    except OSError as exc:
        raise ScoreError(f"cannot read {source}: {exc.strerror or exc}") from None
    if not exists:
        raise ScoreError(f"input {source} does not exist")
    if not folder:
        return [Shard(fs, path, source)]
    shards = []
    for entry in sorted(fs.ls(path, detail=True), key=lambda e: e["name"]):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") == "file" and ShardName.parse(name).format is not None:
            where = os.path.join(source, name) if not is_url(source) else \
                source.rstrip("/") + "/" + name
            shards.append(Shard(fs, entry["name"], where))
    if not shards:
        raise ScoreError(f"{source} holds no {SHARD_KINDS} shards")
    return shards


def is_folder(source: str) -> bool:
    if source == "-":
        return False
    fs, path = filesystem(source)
    try:
        return fs.isdir(path)
    except OSError:
        return False


def count_rows(shard: Shard) -> int | None:
    """Total rows for the progress bar's ETA: Parquet metadata, or a fast newline count of
    a plain local file (compressed or remote JSONL is not read twice for an ETA)."""
    try:
        if shard.format == "parquet":
            import pyarrow.parquet as pq

            with shard.open_raw() as raw:
                return pq.ParquetFile(raw).metadata.num_rows
        local = shard.local_path
        if local is None:
            return None
        with open(local, "rb") as handle:
            if sniff(io.BufferedReader(handle)) is not None:
                return None
            handle.seek(0)
            return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    except (OSError, ValueError, ScoreError):  # ArrowInvalid is a ValueError: the read reports it
        return None
