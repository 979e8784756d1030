"""Bounded load against a real bentoml serve (hashing encoder), with a model switch mid-run.

`make test` runs a short pass; `make test-all` runs 20,000 /tag and 500 /tag_batch x 100
at 64 concurrent clients (TROPES_LOAD_FULL=1)."""

import asyncio
import json
import os
import shutil
import time

import httpx
import pytest

from tropes.http.launch import process_rss_mb, running_server
from tropes.training.artifact import set_latest

FULL = os.environ.get("TROPES_LOAD_FULL") == "1"
TAGS, BATCHES, CLIENTS = (20_000, 500, 64) if FULL else (2_000, 40, 32)
pytestmark = pytest.mark.e2e


async def _post(client, path, payload, stats):
    for _ in range(50):
        r = await client.post(path, json=payload)
        if r.status_code == 503:
            stats["backpressure"] += 1
            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
            continue
        return r
    raise AssertionError("still 503 after 50 tries")


async def _load(url, texts, stats, switch, tags=TAGS, batches=BATCHES, clients=CLIENTS):
    jobs = [("/tag", {"text": texts[i % len(texts)]}) for i in range(tags)]
    jobs += [("/tag_batch", {"items": [{"id": k, "text": texts[(i + k) % len(texts)]}
                                       for k in range(100)]}) for i in range(batches)]
    jobs.sort(key=lambda j: hash(json.dumps(j[1])) % 7)  # interleave both kinds
    queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    total = len(jobs)

    async def worker():
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            while not queue.empty():
                path, payload = queue.get_nowait()
                r = await _post(client, path, payload, stats)
                if r.status_code != 200:
                    stats["failed"] += 1
                    stats["errors"].append((r.status_code, r.text[:200]))
                    continue
                stats["ok"] += 1
                stats["versions"].add(r.json()["model"])
                if stats["ok"] == total // 2:
                    switch()

    await asyncio.gather(*(worker() for _ in range(clients)))


def test_load_with_reload(hashing_workspace, tmp_path):
    run_load(hashing_workspace.models_dir, "hashing", hashing_workspace.labels_dir, tmp_path,
             TAGS, BATCHES, CLIENTS)


@pytest.mark.slow
@pytest.mark.encoder
def test_load_with_reload_real_encoder(tmp_path):
    """The real model's worker under a shorter load (the encoder costs ~16 ms a passage)."""
    from .conftest import REPO

    # the encoder's working set still settles during this short run, so hold it to the
    # service's memory target instead of a growth bound
    run_load(REPO / "models", "minilm", REPO / "labels", tmp_path, 1_000, 20, 64,
             max_rss_mb=1000)


def run_load(source_models, encoder, labels_dir, tmp_path, tags, batches, clients,
             max_rss_mb=None):
    models = tmp_path / "models"
    shutil.copytree(source_models, models)
    first = (models / "LATEST").read_text().strip()
    if first != "v1":
        shutil.copytree(models / first, models / "v1")
        meta = json.loads((models / "v1" / "model.json").read_text())
        meta["version"] = "v1"
        (models / "v1" / "model.json").write_text(json.dumps(meta))
        set_latest(models, "v1")
    shutil.copytree(models / "v1", models / "v2")
    meta = json.loads((models / "v2" / "model.json").read_text())
    meta["version"] = "v2"
    (models / "v2" / "model.json").write_text(json.dumps(meta))
    texts = [line for line in (labels_dir / "train"
                               / "negatives_general.jsonl").read_text().splitlines()]
    texts = [json.loads(t)["text"] for t in texts]
    stats = {"ok": 0, "failed": 0, "backpressure": 0, "errors": [], "versions": set()}
    latest_history = ["v1"]

    def switch():
        set_latest(models, "v2")
        latest_history.append("v2")

    with running_server(models, encoder=encoder,
                        env={"TROPES_LABELS_DIR": str(labels_dir)}) as (url, proc):
        # warm up: the encoder's working set for full batches is not growth
        warm = {"ok": 0, "failed": 0, "backpressure": 0, "errors": [], "versions": set()}
        asyncio.run(_load(url, texts, warm, lambda: None, 64, 2, clients))
        rss_start = max(process_rss_mb(proc.pid).values())
        start = time.time()
        asyncio.run(_load(url, texts, stats, switch, tags, batches, clients))
        elapsed = time.time() - start
        rss_end = max(process_rss_mb(proc.pid).values())
        final = httpx.get(f"{url}/model").json()["version"]
    print(f"\nload ({encoder}): {stats['ok']} requests ok ({tags} /tag, {batches} /tag_batch "
          f"x 100, {clients} clients) in "
          f"{elapsed:.0f}s, {stats['failed']} failed, {stats['backpressure']} 503 retried; "
          f"worker RSS {rss_start:.0f} -> {rss_end:.0f} MB; versions {sorted(stats['versions'])}")
    assert stats["failed"] == 0, stats["errors"][:5]
    assert stats["ok"] == tags + batches
    assert stats["versions"] <= set(latest_history) and final == "v2"
    # BentoML 1.4.40 itself keeps ~5 MB per 1,000 requests: a service whose API returns a
    # constant grew 121 -> 169 MB over 15,000 requests here. Allow that, and catch more.
    if max_rss_mb is not None:
        assert rss_end <= max_rss_mb, f"worker RSS {rss_end:.0f} MB"
    else:
        allowed = 30 + 8 * (tags + batches) / 1000
        assert rss_end - rss_start <= allowed, f"worker grew {rss_end - rss_start:.0f} MB"
