"""Checks on IN and OUT that need no model, made before the model loads, so a typo in a
path fails in a second with `error: <what>, <where>` instead of after loading the encoder."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

from .loop import file_plan, folder_outputs, local_output
from .rows import ScoreError
from .sources import is_folder, list_shards


def check_paths(source: str, output: str, options) -> None:
    output = local_output(output)
    folder_input = is_folder(source)
    shards = None if source == "-" else list_shards(source)  # missing input, empty folder
    if output == "-":
        if folder_input:
            raise ScoreError("a folder of shards needs an output folder, not stdout")
        file_plan(output, options)
        return
    out = Path(output)
    if folder_input:
        if out.exists() and not out.is_dir():
            raise ScoreError(f"output {output} is a file; a folder of shards needs a folder")
        folder_outputs(shards, out, options)  # name collisions, codecs that do not fit
        check_writable(nearest_existing(out), output)
        return
    if out.is_dir():
        raise ScoreError(f"output {output} is a folder; name an output file (.jsonl, "
                         ".jsonl.gz, .jsonl.zst or .parquet), or give a folder of shards")
    file_plan(output, options)
    folder = out.parent
    if not folder.exists():
        raise ScoreError(f"output folder {folder} does not exist (for output {output})")
    if not folder.is_dir():
        raise ScoreError(f"{folder} is not a folder (for output {output})")
    if out.exists() and not options.overwrite and not options.resume:
        raise ScoreError(f"output {out} exists; pass --overwrite to replace it")
    check_writable(folder, output)


def nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_writable(folder: Path, output: str) -> None:
    """Create and remove a file in the folder: the one test that a read-only mount, missing
    permission or exhausted inodes cannot pass (os.access says yes to root)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".tropes-check-"):
            pass
    except OSError as exc:
        what = "is on a read-only file system" if exc.errno == errno.EROFS else \
            f"is not writable ({exc.strerror})"
        raise ScoreError(f"output folder {folder} {what} (for output {output})") from None
