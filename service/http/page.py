"""The service's own pages and docs: `/` (paste a text, see what the model sees), `/review`
(review a `tropes suggest` file one passage at a time and save it in labels/ format),
`/docs` (Swagger UI from BentoML's bundled assets) and `/docs.json` (BentoML's generated
spec with our title, version and description, and the routes BentoML does not list).
Every page is a file in static/ with inline script and style: nothing from another host."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from ..training.settings import load_settings
from ..training.taxonomy import TaxonomyError, load_taxonomy
from .errors import ApiError, answers_errors

STATIC = Path(__file__).parent / "static"
LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}
DESCRIPTION = (
    "Tags passages and documents with AI-portrayal tropes: whether a text portrays AI as "
    "misaligned (deception, self-preservation, power seeking, manipulation, hostility, "
    "specification gaming) or aligned (cooperation, honesty, corrigibility, principled "
    "refusal). Texts longer than the encoder's window are split at paragraphs and sentences "
    "and pooled, never cut short. Try it at [/](/); label definitions and thresholds at "
    "[/labels](/labels).")


def package_version() -> str:
    try:
        return version("tropes")
    except PackageNotFoundError:
        return "unknown"


def static_page(name: str):
    async def view(_: Request) -> HTMLResponse:
        return HTMLResponse((STATIC / name).read_text(encoding="utf-8"))
    return view


async def docs_page(_: Request) -> HTMLResponse:
    # Swagger UI from BentoML's bundled assets; validatorUrl null: no badge from another host
    return HTMLResponse("""<!doctype html><html><head><meta charset="utf-8">
<title>tropes API</title><link rel="stylesheet" href="/static_content/swagger-ui.css">
</head><body><p style="font-family:sans-serif;margin:8px 20px"><a href="/">&larr; try it</a></p>
<div id="swagger-ui"></div>
<script src="/static_content/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/docs.json", dom_id: "#swagger-ui", validatorUrl: null});</script>
</body></html>""")


def _json_get(summary: str, description: str, schema: dict) -> dict:
    return {"get": {"summary": summary, "description": description, "tags": ["tropes"],
                    "responses": {"200": {"description": "OK", "content": {
                        "application/json": {"schema": schema}}}}}}


LABELS_SCHEMA = {"type": "object", "required": ["model", "labels"], "properties": {
    "model": {"type": "string"},
    "labels": {"type": "array", "items": {"type": "object", "required": ["id", "group",
                                                                           "threshold"],
                                           "properties": {
        "id": {"type": "string"}, "group": {"type": "string"},
        "definition": {"type": "string"}, "threshold": {"type": "number"}}}}}}
MODEL_SCHEMA = {"type": "object", "required": ["version"], "properties": {
    "version": {"type": "string"}, "created": {"type": "string"},
    "encoder": {"type": "object"}, "metrics": {"type": "object"},
    "reload_error": {"type": "string", "nullable": True}, "pinned": {"type": "boolean"}}}


def our_spec(generated: dict, model_version: str | None) -> dict:
    """BentoML's spec with our info block, and /labels and /model described."""
    spec = dict(generated)
    spec["info"] = {"title": "tropes", "version": package_version()
                    + (f" (model {model_version})" if model_version else ""),
                    "description": DESCRIPTION}
    paths = dict(spec.get("paths", {}))
    paths["/labels"] = _json_get("Labels", "The taxonomy: ids, groups, definitions and the "
                                 "serving model's thresholds.", LABELS_SCHEMA)
    paths["/model"] = _json_get("Model", "The serving model version, its encoder, metrics "
                                "and the last reload error.", MODEL_SCHEMA)
    spec["paths"] = paths
    spec["tags"] = [{"name": "tropes", "description": "labels and model"},
                    *[t for t in spec.get("tags", []) if t.get("name") != "tropes"]]
    return spec


async def spec_view(_: Request) -> JSONResponse:
    import bentoml

    from .service import Tropes

    holder = getattr(bentoml.get_current_service(), "holder", None)
    generated = await asyncio.to_thread(lambda: Tropes.openapi_spec.asdict())
    return JSONResponse(our_spec(generated, holder.classifier.version if holder else None))


class ReviewStore:
    """Reviewed passages in labels/ format, one JSON line each, in the file the service was
    started with (TROPES_REVIEW_OUTPUT). Saving an id again replaces its line; the file is
    rewritten whole to a temporary name and renamed, so a crash never leaves half a line."""

    def __init__(self, path: Path | None, label_ids: list[str], registers: list[str]):
        self.path = path
        self.label_ids = label_ids
        self.registers = registers
        self.lock = threading.Lock()

    def check(self, body) -> dict:
        if not isinstance(body, dict):
            raise ApiError(422, "expected a JSON object with id, text, labels, register", "body")
        record = {}
        for key in ("id", "text"):
            value = body.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ApiError(422, f"'{key}' must be a non-empty string", key)
            record[key] = value
        labels = body.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ApiError(422, "'labels' must be a list of label ids ([] for none)", "labels")
        for i, label in enumerate(labels):
            if label not in self.label_ids:
                raise ApiError(422, f"unknown label {label!r}", f"labels[{i}]")
            if labels.index(label) != i:
                raise ApiError(422, f"label {label!r} is given twice", f"labels[{i}]")
        record["labels"] = [x for x in self.label_ids if x in labels]
        register = body.get("register")
        if not isinstance(register, str) or (self.registers and register not in self.registers):
            raise ApiError(422, f"'register' must be one of {', '.join(self.registers)}",
                           "register")
        record["register"] = register
        return record

    def save(self, record: dict) -> int:
        """Write the record (replacing an earlier save of its id); the number of passages."""
        with self.lock:
            lines = []
            if self.path.exists():
                lines = self.path.read_text(encoding="utf-8").splitlines()
            line = json.dumps(record, ensure_ascii=False)
            ids = [json.loads(x).get("id") if x.strip() else None for x in lines]
            if record["id"] in ids:
                lines[ids.index(record["id"])] = line
            else:
                lines.append(line)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
            os.replace(tmp, self.path)
            return sum(1 for x in lines if x.strip())


_stores: dict[str, ReviewStore] = {}


def review_store() -> ReviewStore:
    settings = load_settings()
    key = str(settings.review_output)
    if key not in _stores:
        try:
            taxonomy = load_taxonomy(settings.labels_dir / "taxonomy.yaml")
            label_ids, registers = list(taxonomy.ids), list(taxonomy.registers)
        except TaxonomyError:
            label_ids, registers = [], []
        _stores[key] = ReviewStore(settings.review_output, label_ids, registers)
    return _stores[key]


def _is_local(request: Request) -> bool:
    return request.client is not None and request.client.host in LOCAL_HOSTS


async def review_config(request: Request) -> JSONResponse:
    store = review_store()
    enabled = store.path is not None and _is_local(request)
    return JSONResponse({"enabled": enabled,
                         "output": str(store.path) if enabled else None,
                         "labels": store.label_ids, "registers": store.registers})


@answers_errors
async def review_save(request: Request) -> JSONResponse:
    store = review_store()
    if store.path is None:
        raise ApiError(404, "saving reviews is off: start the service with "
                       "TROPES_REVIEW_OUTPUT=path/to/reviewed.jsonl")
    if not _is_local(request):
        raise ApiError(403, "saving reviews is only allowed from the service's own host")
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "the body is not valid JSON", "body") from None
    record = store.check(body)
    count = await asyncio.to_thread(store.save, record)
    return JSONResponse({"saved": record["id"], "output": str(store.path), "passages": count})
