"""Streaming check for bulk scoring: `tropes score` on 2,000 and on 20,000 rows, printing
rows per second and the process's peak RSS for each. Flat RSS = memory does not grow with
the input. Run: .venv/bin/python bench/score_memory.py [--sizes 2000 20000]"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(rows: int, texts: list[str], tmp: Path, fmt: str) -> tuple[float, float]:
    src = tmp / f"in-{rows}.jsonl"
    with open(src, "w") as handle:
        for i in range(rows):
            handle.write(json.dumps({"id": i, "text": texts[i % len(texts)], "n": i}) + "\n")
    out = tmp / f"out-{rows}.{fmt}"
    start = time.perf_counter()
    proc = subprocess.Popen([str(ROOT / ".venv/bin/tropes"), "score", str(src), "-o", str(out),
                             "--quiet"], stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"tropes score failed on {rows} rows")
    return rows / elapsed, usage.ru_maxrss / 1024


def main() -> None:
    from tropes.training.labelset import read_labels

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    args = parser.parse_args()
    texts = [p.text for p in read_labels(ROOT / "labels").passages]
    print(f"{'rows':>8}{'rows/s (incl. start-up)':>26}{'peak RSS MB':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for rows in args.sizes:
            rate, rss = run(rows, texts, Path(tmp), args.format)
            results.append(rss)
            print(f"{rows:>8}{rate:>26.1f}{rss:>14.0f}")
    print(f"peak RSS ratio largest/smallest input: {results[-1] / results[0]:.2f}")


if __name__ == "__main__":
    main()
