"""The BentoML service: a thin HTTP layer over training.predictor via service.runtime."""

from __future__ import annotations

import asyncio
import os

import bentoml
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from service.guard import RequestGuard, error
from service.runtime import MicroBatcher, ModelHolder, Overloaded
from training.config import load_settings
from training.taxonomy import TaxonomyError, load_taxonomy

STATE: dict = {}  # the service instance, for the plain Starlette routes below
LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}


class BatchItem(BaseModel):
    id: str | int | None = Field(default=None, description="echoed back in the answer")
    text: str


def _overloaded(exc: Overloaded) -> JSONResponse:
    return error(503, str(exc), headers={"Retry-After": str(Overloaded.retry_after_s)})


def _check_text(text: str, field: str, limit: int) -> JSONResponse | None:
    if not text.strip():
        return error(422, f"'{field}' is empty", field)
    if len(text) > limit:
        return error(413, f"'{field}' has {len(text):,} characters; the limit is {limit:,}",
                     field)
    return None


async def docs_page(_: Request) -> HTMLResponse:
    # Our own Swagger page from BentoML's bundled assets: no third-party script or tag.
    return HTMLResponse("""<!doctype html><html><head><meta charset="utf-8">
<title>tropes API</title><link rel="stylesheet" href="/static_content/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="/static_content/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/docs.json", dom_id: "#swagger-ui"});</script>
</body></html>""")


async def labels_view(_: Request) -> JSONResponse:
    svc = STATE["service"]
    predictor = svc.holder.predictor
    definitions = {lb["id"]: lb for lb in svc.taxonomy}
    return JSONResponse({"model": predictor.version, "labels": [
        {**definitions.get(label, {"id": label}), "group": group, "threshold": float(t)}
        for label, group, t in zip(predictor.labels, predictor.model.groups,
                                   predictor.thresholds)]})


async def model_view(_: Request) -> JSONResponse:
    holder = STATE["service"].holder
    return JSONResponse({**holder.predictor.model.summary(), "reload_error": holder.last_error,
                         "pinned": holder.pinned is not None})


async def reload_view(request: Request) -> JSONResponse:
    if request.client is None or request.client.host not in LOCAL_HOSTS:
        return error(403, "reload is only allowed from the service's own host")
    result = await asyncio.to_thread(STATE["service"].holder.reload)
    return JSONResponse(result, status_code=200 if result["error"] is None else 409)


extras = Starlette(routes=[
    Route("/", docs_page),
    Route("/labels", labels_view),
    Route("/model", model_view),
    Route("/admin/reload", reload_view, methods=["POST"]),
])


@bentoml.service(name="tropes", workers=1,
                 traffic={"timeout": 600, "max_concurrency": 4096})
@bentoml.asgi_app(extras, path="/")
class Tropes:
    def __init__(self) -> None:
        settings = load_settings()
        self.limits = settings.limits
        self.holder = ModelHolder(settings, pinned=os.environ.get("TROPES_MODEL_VERSION"))
        self.batcher = MicroBatcher(self.holder, max_queue=settings.limits.max_queue_passages)
        try:
            self.taxonomy = load_taxonomy(settings.labels_dir / "taxonomy.yaml").to_json()
        except TaxonomyError:
            self.taxonomy = []  # /labels then shows ids, groups and thresholds only
        self.holder.watch(interval_s=float(os.environ.get("TROPES_WATCH_INTERVAL_S", "1")))
        STATE["service"] = self

    @bentoml.api(route="/tag")
    async def tag(self, text: str) -> dict:
        """Tag one passage: labels, per-label probabilities and the portrayal."""
        if (problem := _check_text(text, "text", self.limits.max_text_chars)) is not None:
            return problem
        try:
            predictor, probs = await self.batcher.submit([text])
        except Overloaded as exc:
            return _overloaded(exc)
        return {**predictor.results(probs)[0], "model": predictor.version}

    @bentoml.api(route="/tag_batch")
    async def tag_batch(self, items: list[BatchItem]) -> dict:
        """Tag up to 1,000 passages; answers in order, echoing each item's id."""
        limit = self.limits.max_batch_items
        if not items:
            return error(422, "'items' is empty", "items")
        if len(items) > limit:
            return error(413, f"'items' has {len(items):,} entries; the limit is {limit:,}",
                         "items")
        for i, item in enumerate(items):
            field = f"items[{i}].text"
            if (problem := _check_text(item.text, field, self.limits.max_text_chars)):
                return problem
        try:
            predictor, probs = await self.batcher.submit([item.text for item in items])
        except Overloaded as exc:
            return _overloaded(exc)
        results = predictor.results(probs)
        return {"model": predictor.version,
                "items": [{"id": item.id, **r} for item, r in zip(items, results)]}

    @bentoml.api(route="/tag_document")
    async def tag_document(self, text: str, id: str | int | None = None) -> dict:
        """Tag a long document: split into passages, max over passages, evidence spans."""
        if (problem := _check_text(text, "text", self.limits.max_document_chars)):
            return problem
        spans = await asyncio.to_thread(self.holder.predictor.split, text)
        try:
            predictor, probs = await self.batcher.submit([text[s.start:s.end] for s in spans])
        except Overloaded as exc:
            return _overloaded(exc)
        return {"id": id, **predictor.document_result(spans, probs), "model": predictor.version}


Tropes.add_asgi_middleware(RequestGuard)
