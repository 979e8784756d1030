"""Who may call /admin/reload.

With TROPES_ADMIN_TOKEN set: only a request carrying "Authorization: Bearer <token>".
Without it: only a loopback client that names a loopback Host (DNS rebinding names another),
sends no foreign Origin (a cross-site form POST does) and came through no proxy (a proxy's
X-Forwarded-For can make any client look local when FORWARDED_ALLOW_IPS='*')."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from .errors import ApiError

LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def host_name(value: str) -> str:
    """'127.0.0.1:3000' -> '127.0.0.1', '[::1]:3000' -> '::1'"""
    try:
        return (urlsplit(f"//{value}").hostname or "").lower()
    except ValueError:
        return ""


def check_admin(request, token: str | None) -> None:
    if token:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                  token.encode()):
            raise ApiError(401, "reload needs 'Authorization: Bearer <TROPES_ADMIN_TOKEN>'",
                           "Authorization", headers={"WWW-Authenticate": "Bearer"})
        return
    client = request.client.host if request.client is not None else None
    if client not in LOCAL_HOSTS:
        raise ApiError(403, "reload is only allowed from the service's own host (or set "
                       "TROPES_ADMIN_TOKEN)")
    if any(name in request.headers for name in PROXY_HEADERS):
        raise ApiError(403, "reload through a proxy needs TROPES_ADMIN_TOKEN", "X-Forwarded-For")
    if host_name(request.headers.get("host", "")) not in LOCAL_HOSTS:
        raise ApiError(403, "reload must name a loopback Host (127.0.0.1, ::1 or localhost)",
                       "Host")
    origin = request.headers.get("origin")
    if origin is not None and host_name(urlsplit(origin).netloc) not in LOCAL_HOSTS:
        raise ApiError(403, "reload is refused from another site's page", "Origin")
