"""ASGI middleware in front of the API: body-size limit (413) and content type (415).

Bodies sent with curl's default form content type, or none, are read as JSON, so
`curl localhost:3000/tag -d '{"text": "..."}'` works as users expect."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

from ..text_checks import unencodable_at
from ..training.settings import load_settings
from .errors import ApiError

API_PATHS = {"/tag", "/tag_batch", "/tag_document"}
READ_AS_JSON = {"", "application/json", "application/x-www-form-urlencoded"}
# our bodies nest 3 deep ({"items": [{"text": ...}]}); deeper is an attack or a mistake,
# and past ~1,000 levels the parsers recurse out of stack
MAX_JSON_DEPTH = 32


def scan_json(value) -> tuple[int, str | None]:
    """(nesting depth, path of the first string UTF-8 cannot encode or None), without
    recursion: a lone surrogate ("\\ud83d", valid JSON) would fail the tokenizer later."""
    deepest, bad, stack = 0, None, [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if bad is None and unencodable_at(item) is not None:
                bad = path or "body"
            continue
        if not isinstance(item, dict | list):
            continue
        deepest = max(deepest, depth)
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in reversed(list(pairs)):
            if isinstance(key, str) and bad is None and unencodable_at(key) is not None:
                bad = path or "body"
            where = f"{path}[{key}]" if isinstance(key, int) else \
                (f"{path}.{key}" if path else key)
            stack.append((child, depth + 1, where))
    return deepest, bad


def error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return ApiError(status, message, field).response()


class BodyTooLarge(Exception):
    pass


class RequestGuard:
    def __init__(self, app, max_body_bytes: int | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes or load_settings().limits.max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in API_PATHS:
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            return await error(405, f"{scope['path']} takes POST")(scope, receive, send)
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media not in READ_AS_JSON:
            return await error(415, f"content type {media!r} is not supported; send JSON "
                               "(application/json)", "Content-Type")(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await self._too_large(scope, receive, send)
        body = await self._read_body(receive)
        if body is None:
            return await self._too_large(scope, receive, send)
        if (problem := body_problem(body)) is not None:
            return await error(*problem)(scope, receive, send)
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope["headers"]
                            if k not in (b"content-type", b"content-length")]
        scope["headers"] += [(b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, _uniform_errors(send))

    async def _read_body(self, receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, scope, receive, send):
        response = error(413, f"request body is over the {self.max_body_bytes:,}-byte limit",
                         "body")
        return await response(scope, receive, send)


def body_problem(body: bytes) -> tuple[int, str, str] | None:
    """(status, message, field) when the body cannot be our JSON, or None."""
    try:
        depth, unencodable = scan_json(json.loads(body))
    except UnicodeDecodeError:
        return 400, "request body is not valid UTF-8", "body"
    except json.JSONDecodeError as exc:
        return (400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                f"{exc.colno}", "body")
    except RecursionError:
        depth, unencodable = MAX_JSON_DEPTH + 1, None
    if depth > MAX_JSON_DEPTH:
        return 400, f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels", "body"
    if unencodable is not None:
        return (422, f"'{unencodable}' is not valid Unicode (a lone surrogate); send UTF-8 "
                "text", unencodable)
    return None


def field_path(loc) -> str:
    """pydantic's location ["items", 0, "text"] as items[0].text"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _uniform_errors(send):
    """Rewrite BentoML's schema-validation 400s ({"detail": [{"loc": ...}]}, which its own
    OpenAPI spec declares as a string) into our shape: {"error", "field", "detail": str}."""
    held: dict = {}

    async def wrapped(message):
        if message["type"] == "http.response.start" and message["status"] == 400:
            held["start"] = message
            held["body"] = b""
            return
        if "start" not in held:
            return await send(message)
        held["body"] += message.get("body", b"")
        if message.get("more_body"):
            return
        body = held["body"]
        try:
            data = json.loads(body)
            problems = data.get("detail") if isinstance(data, dict) else None
            if isinstance(problems, list) and problems and isinstance(problems[0], dict):
                fields = [field_path(p.get("loc", [])) for p in problems]
                texts = [f"{f}: {p.get('msg', 'invalid')}" for f, p in zip(fields, problems)]
                body = json.dumps({"error": "; ".join(texts), "field": fields[0],
                                   "detail": "; ".join(texts)}).encode()
        except (ValueError, AttributeError):
            pass
        start = dict(held["start"])
        start["headers"] = [(k, v) for k, v in start["headers"] if k != b"content-length"]
        start["headers"].append((b"content-length", str(len(body)).encode()))
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return wrapped
