"""The service's one error type and its one conversion into an HTTP answer.

Routes raise ApiError(status, message, field); `answers_errors` (on every route) and the
request guard turn it into the same JSON body: {"error": message, "field": field}."""

from __future__ import annotations

import functools

from starlette.responses import JSONResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def answers_errors(route):
    """Route decorator: an ApiError raised inside becomes its JSON answer."""

    @functools.wraps(route)
    async def wrapped(*args, **kwargs):
        try:
            return await route(*args, **kwargs)
        except ApiError as exc:
            return exc.response()

    return wrapped
