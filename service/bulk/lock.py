"""One run per output: an exclusive flock on OUT.lock, held from before the first byte of
OUT.partial or OUT.progress is touched until OUT is complete (or the run ends).

The lock file holds the owner's pid so the refusal can name it. It is removed by its owner
on release; a process that opened a lock file just before it was removed notices (the path
no longer leads to the inode it locked) and tries again, so two runs never both hold it."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .rows import ScoreError


def lock_path(final: Path) -> Path:
    return final.with_name(final.name + ".lock")


class OutputLock:
    """Context manager: `with OutputLock(final): ...` or acquire()/release()."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.path = lock_path(self.final)
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        for _ in range(100):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise ScoreError(self._busy_message()) from None
                raise ScoreError(f"cannot lock {self.path}: {exc.strerror}") from None
            if self._still_ours(fd):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)  # its owner removed it between our open and our lock: again
        raise ScoreError(f"cannot lock {self.path}: it keeps being replaced")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            raise ScoreError(f"output folder {self.final.parent} does not exist") from None
        except OSError as exc:
            raise ScoreError(f"cannot write in {self.final.parent}: {exc.strerror} "
                             f"(creating {self.path.name})") from None

    def _still_ours(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _busy_message(self) -> str:
        try:
            pid = self.path.read_text().strip() or "unknown"
        except OSError:
            pid = "unknown"
        return (f"output {self.final} is being written by another tropes run (pid {pid}); "
                f"wait for it to finish or choose another output (lock: {self.path})")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: see the module doc
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
