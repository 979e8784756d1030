"""The BentoML service: a thin HTTP layer over tropes.Classifier (via the model holder and
the micro-batcher). Routes raise ApiError; `answers_errors` converts it."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import bentoml
from pydantic import BaseModel, Field, PlainValidator, WithJsonSchema
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..splitter import approx_tokens
from ..text_checks import unencodable_at
from ..training.settings import load_settings
from ..training.taxonomy import TaxonomyError, load_taxonomy
from .admin import check_admin
from .batching import MicroBatcher
from .errors import ApiError, answers_errors
from .guard import RequestGuard
from .holder import ModelHolder
from .logs import quiet_client_errors
from .page import docs_page, review_config, review_save, spec_view, static_page
from .tagging import tag_texts
from .threads import ThreadTuner

_GAUGES: dict = {}


def report_model_state(state: dict) -> None:
    """tropes_model_stale on /metrics: 1 while the version LATEST names cannot be served."""
    if "stale" not in _GAUGES:  # created in the worker, once: prometheus refuses duplicates
        import prometheus_client

        _GAUGES["stale"] = prometheus_client.Gauge(
            "tropes_model_stale", "1 while models/LATEST names a version that failed to load "
            "(the previous one keeps serving)", multiprocess_mode="max")
    _GAUGES["stale"].set(0 if state["up_to_date"] else 1)


def strict_id(value):
    """Ids are echoed unchanged, so only strings and integers are ids: pydantic's lax mode
    would turn true, false and 2.0 into 1, 0 and 2."""
    if value is None or isinstance(value, str) or (isinstance(value, int)
                                                   and not isinstance(value, bool)):
        return value
    raise ValueError(f"an id must be a string or an integer, not {json.dumps(value)[:40]}")


ItemId = Annotated[str | int | None, PlainValidator(strict_id),
                   WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"},
                                             {"type": "null"}]})]


class BatchItem(BaseModel):
    id: ItemId = Field(default=None, description="echoed back in the answer")
    text: str


def check_text(text: str, field: str, limit: int) -> None:
    if not text.strip():
        raise ApiError(422, f"'{field}' is empty", field)
    if (bad := unencodable_at(text)) is not None:
        raise ApiError(422, f"'{field}' is not valid Unicode: a lone surrogate "
                       f"U+{ord(text[bad]):04X} at character {bad}", field)
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
                                   classifier.thresholds)],
        "group_scores": classifier.has_group_scores})


async def model_view(_: Request) -> JSONResponse:
    holder = bentoml.get_current_service().holder
    return JSONResponse({**holder.classifier.model.summary(), "reload_error": holder.last_error,
                         "pinned": holder.pinned is not None, "state": holder.state()})


@answers_errors
async def reload_view(request: Request) -> JSONResponse:
    svc = bentoml.get_current_service()
    check_admin(request, svc.admin_token)
    result = await asyncio.to_thread(svc.holder.reload)
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
        quiet_client_errors()
        self.limits = settings.limits
        self.admin_token = settings.admin_token
        self.holder = ModelHolder(settings, pinned=settings.model_version)
        self.holder.listener = report_model_state
        report_model_state(self.holder.state())
        # the encoder thread needs the GIL between torch ops; with the event loop busy (many
        # clients) the default 5 ms switch interval made each encoder call wait for it
        # hundreds of times (measured: one passage 0.5 s instead of 30 ms)
        sys.setswitchinterval(0.0005)
        self.batcher = MicroBatcher(self.holder, max_queue=settings.limits.max_queue_passages,
                                    max_queue_seconds=settings.limits.max_queue_seconds,
                                    max_wait_seconds=settings.limits.max_wait_seconds,
                                    tuner=ThreadTuner.for_torch())
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
        says into how many passages); `evidence: true` adds the sentences behind each label.
        A passage the cascade's prefilter kept from the encoder answers `prefiltered: true`,
        no labels, and cheap-stage scores under every threshold."""
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
    async def tag_document(self, text: str, id: ItemId = None, evidence: bool = True) -> dict:
        """Tag a long document: split at paragraphs and sentences, label by the
        length-corrected max over passages, evidence sentences per label."""
        check_text(text, "text", self.limits.max_document_chars)
        cap = self.limits.max_document_passages
        if (least := approx_tokens(text) // self.holder.classifier.window) > cap:
            raise ApiError(413, f"'text' needs about {least:,} passages or more; the limit is "
                           f"{cap:,}: send it in parts", "text")
        classifier, results = await tag_texts(self.holder, self.batcher, [text],
                                              documents=True, evidence=evidence)
        return {"id": id, **results[0].to_dict(), "model": classifier.version}


Tropes.add_asgi_middleware(RequestGuard)
