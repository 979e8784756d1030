"""Start a real `tropes serve` (bentoml serve) on 127.0.0.1 and a free port, wait until it is
ready, and stop it: for tests, benchmarks and local tools. (psutil, for process checks, is a
dev dependency.)"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

EXE = str(Path(sys.executable).with_name("tropes"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_processes(root_pid: int) -> list:
    """The serve process and every descendant (BentoML's arbiter starts the workers)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def process_rss_mb(root_pid: int) -> dict[int, float]:
    """Current RSS of each server process (the worker holding the model is the largest)."""
    out = {}
    for proc in server_processes(root_pid):
        with contextlib.suppress(Exception):
            out[proc.pid] = proc.memory_info().rss / 2**20
    return out


@contextlib.contextmanager
def running_server(models_dir: Path, encoder: str = "minilm", env: dict | None = None,
                   startup_s: float = 120):
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BENTOML")}
    full_env.update(TROPES_MODELS_DIR=str(models_dir), TROPES_WATCH_INTERVAL_S="0.2",
                    **(env or {}))
    cmd = [EXE, "--encoder", encoder, "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = Path(tempfile.mkstemp(prefix="tropes-serve-", suffix=".log")[1])
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_s
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise RuntimeError("server did not start:\n"
                                   + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        if os.environ.get("TROPES_KEEP_SERVER_LOG"):
            print(f"server log kept: {log_path}")
        else:
            log_path.unlink(missing_ok=True)
