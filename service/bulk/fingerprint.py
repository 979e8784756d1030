"""What a checkpoint was made from, so `--resume` never splices another input, model or
set of options onto a partial output.

JSONL input (a file or stdin) is fingerprinted by a SHA-256 of the lines already scored:
rows after the checkpoint may be fixed by hand (the advice a failed row gives) without
refusing the resume, but any change to what was already scored is caught. Parquet input,
which is not edited in place, is fingerprinted by path, size, modification time and row
count. The output's format and compression, the row selection and the weight rule are
options too: rows before and after the checkpoint must agree on them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .rows import ScoreError

# the options whose change would make rows before and after the checkpoint disagree
COMPARED = ("input", "model", "threshold_profile", "text_field", "documents", "output",
            "keep", "drop", "weight")


def run_fingerprint(shard, plan, options) -> dict:
    """Everything except the content hash, which grows as rows are read (HashedLines)."""
    if shard is None:
        source = "<stdin>"
    else:
        source = str(Path(shard.local_path).resolve()) if shard.local_path else shard.where
    selector = options.selector
    out = {"input": source,
           "model": options.model_version, "threshold_profile": options.threshold_profile,
           "text_field": options.text_field, "documents": options.documents,
           "output": [plan.format, plan.compression],
           "keep": list(selector.expressions[0]) if selector else [],
           "drop": list(selector.expressions[1]) if selector else [],
           "weight": options.weight_floor if options.weight else None}
    if shard is not None and shard.format == "parquet":
        import pyarrow.parquet as pq

        try:
            with shard.open_raw() as raw:
                rows = pq.ParquetFile(raw).metadata.num_rows
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
            raise ScoreError(f"cannot read {shard.where} as Parquet: {exc}") from None
        out["parquet"] = {**shard.info(), "rows": rows}
    return out


def check_resume(saved: dict, current: dict, final: Path) -> None:
    """Refuse, naming what changed, when the checkpoint was made from something else."""
    before = saved.get("fingerprint")
    if before is None:
        raise ScoreError(f"cannot resume {final}: its checkpoint predates input checks, so "
                         "what it was made from is unknown; rerun with --overwrite")
    changed = [f"{key} was {before.get(key)!r}, now {current.get(key)!r}" for key in COMPARED
               if before.get(key) != current.get(key)]
    if before.get("parquet") != current.get("parquet"):
        changed.append(f"the Parquet input changed (was {before.get('parquet')}, "
                       f"now {current.get('parquet')})")
    if changed:
        raise ScoreError(f"cannot resume {final}: " + "; ".join(changed)
                         + ". Resume with the original input, model and options, or rerun "
                         "with --overwrite to start over")


class HashedLines:
    """Iterates a binary handle's lines, hashing each one it hands out. `digest_at(n)` is
    the hash of the first n lines, recorded as they pass (None until then)."""

    def __init__(self, handle, mark: int = 0):
        self.handle = handle
        self.hash = hashlib.sha256()
        self.count = 0
        self.mark = mark
        self.marked: str | None = self.hash.hexdigest() if mark == 0 else None

    def __iter__(self):
        for line in self.handle:
            self.hash.update(line)
            self.count += 1
            if self.count == self.mark:
                self.marked = self.hash.hexdigest()
            yield line

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


def check_scored_rows(lines: HashedLines, saved: dict, final: Path, where: str) -> None:
    """After the resumed run read past the checkpoint: the rows already scored must be the
    same bytes as when they were scored."""
    expected = saved.get("input_sha256")
    if expected is None:  # Parquet input: size, mtime and row count were compared
        return
    if lines.marked is None:
        raise ScoreError(f"cannot resume {final}: {where} now has {lines.count} row(s), fewer "
                         f"than the {lines.mark} already scored; rerun with --overwrite")
    if lines.marked != expected:
        raise ScoreError(f"cannot resume {final}: the first {lines.mark} row(s) of {where} "
                         "changed since they were scored; resume with the original input, "
                         "or rerun with --overwrite to start over")
