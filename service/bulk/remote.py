"""Scoring through a running service: /tag_batch with bounded concurrency, 503 retries."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from ..result import TagResult
from ..training.errors import TropesError


class RemoteError(TropesError):
    """The service could not be reached or answered an error."""


class RemoteTagger:
    def __init__(self, url: str, batch_items: int = 64, concurrency: int = 4,
                 retries: int = 8, timeout_s: float = 300.0):
        import httpx

        self.url = url.rstrip("/")
        self.batch_items = batch_items
        self.retries = retries
        self.client = httpx.Client(timeout=timeout_s)
        self.pool = ThreadPoolExecutor(concurrency)
        self.version: str | None = None
        self.groups: dict[str, str] = {}  # label id -> group, from /labels
        self.has_group_scores = False

    def labels(self) -> list[str]:
        import httpx

        try:
            response = self.client.get(f"{self.url}/labels")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot read {self.url}/labels: {exc}") from None
        body = response.json()
        self.version = body.get("model")
        self.groups = {label["id"]: label.get("group", "") for label in body["labels"]}
        self.has_group_scores = bool(body.get("group_scores"))
        return [label["id"] for label in body["labels"]]

    def _post(self, texts: list[str]) -> list[TagResult]:
        import httpx

        payload = {"items": [{"id": i, "text": t} for i, t in enumerate(texts)]}
        for attempt in range(self.retries + 1):
            try:
                response = self.client.post(f"{self.url}/tag_batch", json=payload)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise RemoteError(f"cannot reach {self.url}: {exc}") from None
                time.sleep(min(2 ** attempt * 0.25, 10))
                continue
            if response.status_code == 503 and attempt < self.retries:
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code != 200:
                raise RemoteError(f"{self.url}/tag_batch answered {response.status_code}: "
                                  f"{response.text[:300]}")
            body = response.json()
            self.version = body.get("model")
            results = [TagResult.from_dict(item) for item in body["items"]]
            for result in results:  # the model that answered (a service may switch mid-run)
                result.extra["model"] = self.version
            return results
        raise RemoteError(f"{self.url} stayed overloaded after {self.retries} retries")

    def __call__(self, texts: list[str]) -> list[TagResult]:
        chunks = [texts[i:i + self.batch_items] for i in range(0, len(texts), self.batch_items)]
        return [r for part in self.pool.map(self._post, chunks) for r in part]

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()
