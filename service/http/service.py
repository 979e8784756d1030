"""The BentoML service: a thin HTTP layer over tropes.Classifier (via the model holder and
the micro-batcher). Routes raise ApiError; `answers_errors` converts it."""

from __future__ import annotations

import asyncio

import bentoml
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..training.settings import load_settings
from ..training.taxonomy import TaxonomyError, load_taxonomy
from .batching import MicroBatcher
from .errors import ApiError, answers_errors
from .guard import RequestGuard
from .holder import ModelHolder
from .page import docs_page, review_config, review_save, spec_view, static_page
from .tagging import tag_texts

LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}


class BatchItem(BaseModel):
    id: str | int | None = Field(default=None, description="echoed back in the answer")
    text: str


def check_text(text: str, field: str, limit: int) -> None:
    if not text.strip():
        raise ApiError(422, f"'{field}' is empty", field)
    if len(text) > limit:
        raise ApiError(413, f"'{field}' has {len(text):,} characters; the limit is {limit:,}",
                       field)


async def labels_view(_: Request) -> JSONResponse:
    svc = bentoml.get_current_service()
    classifier = svc.holder.classifier
    definitions = {lb["id"]: lb for lb in svc.taxonomy}
    return JSONResponse({"model": classifier.version, "labels": [
        {**definitions.get(label, {"id": label}), "group": group, "threshold": float(t)}
        for label, group, t in zip(classifier.labels, classifier.groups,
                                   classifier.thresholds)]})


async def model_view(_: Request) -> JSONResponse:
    holder = bentoml.get_current_service().holder
    return JSONResponse({**holder.classifier.model.summary(), "reload_error": holder.last_error,
                         "pinned": holder.pinned is not None})


@answers_errors
async def reload_view(request: Request) -> JSONResponse:
    if request.client is None or request.client.host not in LOCAL_HOSTS:
        raise ApiError(403, "reload is only allowed from the service's own host")
    result = await asyncio.to_thread(bentoml.get_current_service().holder.reload)
    return JSONResponse(result, status_code=200 if result["error"] is None else 409)


extras = Starlette(routes=[
    Route("/", static_page("index.html")),
    Route("/review", static_page("review.html")),
    Route("/review/config", review_config),
    Route("/review/save", review_save, methods=["POST"]),
    Route("/docs", docs_page),
    Route("/docs.json", spec_view),
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
        self.holder = ModelHolder(settings, pinned=settings.model_version)
        self.batcher = MicroBatcher(self.holder, max_queue=settings.limits.max_queue_passages)
        try:
            self.taxonomy = load_taxonomy(settings.labels_dir / "taxonomy.yaml").to_json()
        except TaxonomyError:
            self.taxonomy = []  # /labels then shows ids, groups and thresholds only
        self.stop_watching = self.holder.watch(interval_s=settings.watch_interval_s)

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.stop_watching.set()

    @bentoml.api(route="/tag")
    @answers_errors
    async def tag(self, text: str, evidence: bool = False) -> dict:
        """Tag one passage: labels, per-label probabilities and the portrayal. A text longer
        than the encoder's window is split and pooled like a document (`passages_pooled`
        says into how many passages); `evidence: true` adds the sentences behind each label."""
        check_text(text, "text", self.limits.max_text_chars)
        classifier, results = await tag_texts(self.holder, self.batcher, [text],
                                              evidence=evidence)
        return {**results[0].to_dict(), "model": classifier.version}

    @bentoml.api(route="/tag_batch")
    @answers_errors
    async def tag_batch(self, items: list[BatchItem], evidence: bool = False) -> dict:
        """Tag up to 1,000 passages; answers in order, echoing each item's id. Long texts
        are split and pooled as in /tag."""
        limit = self.limits.max_batch_items
        if not items:
            raise ApiError(422, "'items' is empty", "items")
        if len(items) > limit:
            raise ApiError(413, f"'items' has {len(items):,} entries; the limit is {limit:,}",
                           "items")
        for i, item in enumerate(items):
            check_text(item.text, f"items[{i}].text", self.limits.max_text_chars)
        classifier, results = await tag_texts(self.holder, self.batcher,
                                              [item.text for item in items], evidence=evidence)
        return {"model": classifier.version,
                "items": [{"id": item.id, **r.to_dict()} for item, r in zip(items, results)]}

    @bentoml.api(route="/tag_document")
    @answers_errors
    async def tag_document(self, text: str, id: str | int | None = None,
                           evidence: bool = True) -> dict:
        """Tag a long document: split at paragraphs and sentences, label by the
        length-corrected max over passages, evidence sentences per label."""
        check_text(text, "text", self.limits.max_document_chars)
        classifier, results = await tag_texts(self.holder, self.batcher, [text],
                                              documents=True, evidence=evidence)
        return {"id": id, **results[0].to_dict(), "model": classifier.version}


Tropes.add_asgi_middleware(RequestGuard)
