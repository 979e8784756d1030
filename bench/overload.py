"""Overload: /tag latency while 64 clients mix /tag with 100-item /tag_batch (issue 15).

Starts `tropes serve` with the shipped model and the real encoder on 127.0.0.1, measures
/tag p99 unloaded, then runs 64 concurrent clients for --seconds (a quarter of them
sending 100-item batches, the rest single /tag), and prints /tag p50/p99 under load, the
ratio to the unloaded p99, how many requests got 503 (and whether each had Retry-After),
and any other 5xx. Goal: loaded /tag p99 within 5x unloaded, or 503 + Retry-After; no
other 5xx. One run, on demand: `.venv/bin/python bench/overload.py`."""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def texts() -> list[str]:
    from tropes.training.labelset import read_labels

    return [p.text for p in read_labels(ROOT / "labels").passages if p.split == "test"]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


async def unloaded(url: str, sample: list[str], n: int) -> list[float]:
    import httpx

    out = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for i in range(n):
            start = time.perf_counter()
            r = await client.post("/tag", json={"text": sample[i % len(sample)]})
            r.raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
    return out


async def loaded(url: str, sample: list[str], clients: int, seconds: float) -> dict:
    import httpx

    stats = {"tag_ms": [], "tag_ok": 0, "batch_ok": 0, "503": 0, "503_without_retry_after": 0,
             "other_5xx": [], "other": [], "503_reasons": {}}
    stop = time.perf_counter() + seconds

    async def client_loop(k: int) -> None:
        batch = k % 4 == 0
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            i = k
            while time.perf_counter() < stop:
                i += clients
                if batch:
                    path = "/tag_batch"
                    body = {"items": [{"id": j, "text": sample[(i + j) % len(sample)]}
                                      for j in range(100)]}
                else:
                    path, body = "/tag", {"text": sample[i % len(sample)]}
                start = time.perf_counter()
                r = await client.post(path, json=body)
                ms = (time.perf_counter() - start) * 1000
                if r.status_code == 200:
                    if batch:
                        stats["batch_ok"] += 1
                    else:
                        stats["tag_ok"] += 1
                        stats["tag_ms"].append(ms)
                elif r.status_code == 503:
                    stats["503"] += 1
                    words = re.sub(r"[\d.]+ ", "N ", r.json().get("error", "")).split()
                    reason = f"{path}: {' '.join(words[:6])}"
                    stats["503_reasons"][reason] = stats["503_reasons"].get(reason, 0) + 1
                    if "retry-after" not in r.headers:
                        stats["503_without_retry_after"] += 1
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                elif r.status_code >= 500:
                    stats["other_5xx"].append((r.status_code, r.text[:120]))
                else:
                    stats["other"].append((r.status_code, r.text[:120]))

    await asyncio.gather(*(client_loop(k) for k in range(clients)))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--unloaded", type=int, default=100, help="unloaded /tag requests")
    args = parser.parse_args()
    from tropes.http.launch import process_rss_mb, running_server

    sample = texts()
    with running_server(ROOT / "models") as (url, proc):
        asyncio.run(unloaded(url, sample, 10))  # warm-up
        quiet = asyncio.run(unloaded(url, sample, args.unloaded))
        rss_before = max(process_rss_mb(proc.pid).values())
        busy = asyncio.run(loaded(url, sample, args.clients, args.seconds))
        rss_after = max(process_rss_mb(proc.pid).values())
    base = p99(quiet)
    print(f"unloaded /tag: p50 {statistics.median(quiet):.1f} ms, p99 {base:.1f} ms "
          f"({len(quiet)} requests)")
    if busy["tag_ms"]:
        under = p99(busy["tag_ms"])
        print(f"{args.clients} clients, {args.seconds:.0f} s: /tag p50 "
              f"{statistics.median(busy['tag_ms']):.1f} ms, p99 {under:.1f} ms = "
              f"{under / base:.2f}x unloaded p99 (goal <= 5x or 503)")
    print(f"served: {busy['tag_ok']} /tag, {busy['batch_ok']} /tag_batch x 100; "
          f"503: {busy['503']} ({busy['503_without_retry_after']} without Retry-After); "
          f"other 5xx: {len(busy['other_5xx'])} {busy['other_5xx'][:3]}; "
          f"other non-200: {len(busy['other'])} {busy['other'][:3]}")
    print("503 by route and reason:", dict(sorted(busy["503_reasons"].items())))
    print(f"worker RSS {rss_before:.0f} MB before the load, {rss_after:.0f} MB after")


if __name__ == "__main__":
    main()
