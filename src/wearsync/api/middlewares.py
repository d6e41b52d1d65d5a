"""Request id and access log, JSON errors, and API-key authentication."""

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from uuid import UUID

import structlog
from aiohttp import web

from wearsync import metrics
from wearsync.api.common import APP_ID, DEPS, KEY_CACHE, ApiError, dumps
from wearsync.db import DB_TIMEOUT_ERRORS, TRANSIENT_DB_ERRORS, keys
from wearsync.queue import QUEUE_UNAVAILABLE

log = structlog.get_logger("wearsync.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Webhooks carry no API key: each provider's own signature or verify token is checked instead;
# /metrics has its own optional token (Prometheus sends no API key); the API's docs are public; nor
# does a browser sent back by a provider carry a key: the OAuth state authenticates it; nor do the
# dashboard's files, nor the hosted connect pages (their link's signed token is the check).
PUBLIC_ROUTES = frozenset(
    {
        "health",
        "metrics",
        "webhook",
        "webhook-unsigned",
        "webhook-strava-validation",
        "openapi",
        "docs",
        "docs-slash",
        "docs-static",
        "oauth-callback",
        "dashboard",  # the page signs in itself, and calls the API with the key it was given
        "dashboard-static",
        "connect-page",  # a connect link's signed token authenticates these
        "connect-start",
        "connect-result",
    }
)
INVALID_KEY = "Invalid or missing API key"
SECRET_WEBHOOK_PATH = re.compile(r"^(/api/v1/webhooks/[^/]*/).+")  # with what follows: a path secret


def _error(status: int, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, dumps=dumps, headers=headers)


_STARTED = web.RequestKey("started", float)
_FILE_SENT_LATER = web.RequestKey("file_sent_later", bool)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    request[_STARTED] = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        # A file response settles its status (404 for a missing file, 304, 206) only as aiohttp
        # sends it, after this middleware: logged then, by log_file_response.
        request[_FILE_SENT_LATER] = isinstance(response, web.FileResponse) and not response.prepared
        return response
    finally:
        if not request.get(_FILE_SENT_LATER):
            _log_request(request, status)
        structlog.contextvars.unbind_contextvars("request_id")


async def log_file_response(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the request line of a file response, with the status it was sent with."""
    if request.get(_FILE_SENT_LATER):
        with structlog.contextvars.bound_contextvars(request_id=response.headers.get("X-Request-ID", "")):
            _log_request(request, response.status)


def _log_request(request: web.Request, status: int) -> None:
    elapsed = time.perf_counter() - request[_STARTED]
    path = SECRET_WEBHOOK_PATH.sub(r"\1***", request.path)  # the path secret is a credential
    log.info("request", method=request.method, path=path, status=status, ms=round(elapsed * 1000, 1))
    metrics.observe_request(request, status, elapsed)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as `{"detail": ...}` with its status."""
    try:
        return await handler(request)
    except ApiError as e:
        return _error(e.status, e.detail, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(e.status, e.reason)
    except DB_TIMEOUT_ERRORS as e:
        log.error("database statement timed out", error=repr(e))
        return _error(503, "Database busy: a query timed out, try again later")
    except TRANSIENT_DB_ERRORS as e:
        log.error("database unavailable", error=repr(e))
        return _error(503, "Database unavailable, try again later")
    except QUEUE_UNAVAILABLE as e:
        log.error("queue unavailable", error=repr(e))
        return _error(503, "Queue unavailable, try again later")
    except Exception:
        log.exception("unhandled error")
        return _error(500, "Internal server error")


# Valid keys are remembered briefly, saving a query per request; a revoked key stops working
# within KEY_CACHE_S. Unknown keys are never cached (each costs a query, like the first use).
KEY_CACHE_S, KEY_CACHE_SIZE = 30.0, 10_000


async def _application_for_key(request: web.Request, key: str) -> UUID | None:
    cache = request.app[KEY_CACHE]
    digest = keys.hash_api_key(key)
    hit = cache.get(digest)
    now = time.monotonic()
    if hit is not None and hit[1] > now:
        return hit[0]
    app_id = await keys.application_for_key(request.app[DEPS].db, key)
    if app_id is not None:
        if len(cache) >= KEY_CACHE_SIZE:
            cache.clear()
        cache[digest] = (app_id, now + KEY_CACHE_S)
    return app_id


@web.middleware
async def api_key_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    if route.name in PUBLIC_ROUTES or request.match_info.http_exception is not None:
        return await handler(request)
    key = request.headers.get("X-API-Key", "")
    if not key or len(key) > 200 or not key.isascii():  # keys are ASCII; a header may not be UTF-8
        raise ApiError(401, INVALID_KEY)
    app_id = await _application_for_key(request, key)
    if app_id is None:
        raise ApiError(401, INVALID_KEY)
    request[APP_ID] = app_id
    return await handler(request)
