"""Client errors as one log line. BentoML logs every request its schema refuses with a full
traceback at ERROR (2 KB for a 31-byte bad request); a client's mistake is not the server's
error, so such records become one WARNING line naming the route and what was wrong."""

from __future__ import annotations

import logging

BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"  # its log_exception()


class ClientErrorsOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not is_client_error(exc):
            return True
        summary = " ".join(str(exc).split())
        original = record.getMessage()
        record.msg = "%s: client error %s: %s"
        record.args = (original, type(exc).__name__, summary[:300])
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def is_client_error(exc: BaseException) -> bool:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return True
    code = getattr(getattr(exc, "error_code", None), "value", None)
    return isinstance(code, int) and 400 <= code < 500


def quiet_client_errors() -> None:
    logger = logging.getLogger(BENTOML_REQUEST_LOGGER)
    if not any(isinstance(f, ClientErrorsOneLine) for f in logger.filters):
        logger.addFilter(ClientErrorsOneLine())
