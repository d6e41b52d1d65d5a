"""The live stream: `GET /api/v1/events/stream`, an application's events as server-sent events.

Each event is one SSE message: `id` its position in the log (`<tx>-<id>`, db/stream.py), `event`
its type, `data` the body a webhook carries (`{"type", "timestamp", "data"}`) plus `id`, the event
id (a webhook's `webhook-id`). A client that reconnects with `Last-Event-ID` (browsers' EventSource
does it by itself) goes on right after the last event it got, in commit order: none is skipped,
none repeated. Without one the stream starts now; `after=0` replays the log from its start;
`follow=false` ends it once it has sent every event settled so far. The
first message carries only an `id` (the starting position), so a client reconnecting before any
event arrives still loses nothing. The stream polls the log (`WEARSYNC_EVENTS_STREAM_POLL_S`),
sends a comment when idle so that proxies keep it open, ends when the API shuts down and when its
key is revoked (checked as often as the key cache expires).
"""

import asyncio
import contextlib
import re

import structlog
from aiohttp import web

from wearsync.api.common import APP_ID, DEPS, ApiError, validate
from wearsync.api.middlewares import KEY_CACHE_S
from wearsync.api.models import StreamQuery
from wearsync.api.views import own_user
from wearsync.db import TRANSIENT_DB_ERRORS, keys, stream

log = structlog.get_logger("wearsync.api")

CLOSING = web.AppKey("streams_closing", asyncio.Event)  # set when the API shuts down
PAGE = 500  # events read per query
KEEPALIVE_S = 15.0
_POSITION = re.compile(r"0|([0-9]{1,19})-([0-9]{1,19})")
BAD_POSITION = "not a position the stream gave: an event's id (`<tx>-<id>`) or 0"


def parse_position(text: str) -> stream.StreamPosition:
    """`<tx>-<id>` as the stream sends it, or `0` (the log's start); ValueError for anything else."""
    found = _POSITION.fullmatch(text.strip(" \t"))
    if found is None:
        raise ValueError(BAD_POSITION)
    if found[1] is None:
        return stream.START
    position = int(found[1]), int(found[2])
    if max(position) >= 2**63:
        raise ValueError(BAD_POSITION)
    return position


def format_position(position: stream.StreamPosition) -> str:
    return f"{position[0]}-{position[1]}"


def _start(request: web.Request, query: StreamQuery) -> stream.StreamPosition | None:
    """Where the client asked to start: after its Last-Event-ID, else `after`, else None (now)."""
    last = request.headers.get("Last-Event-ID", "").strip(" \t")  # EventSource sends none before it has one
    given, name = (last, "header 'Last-Event-ID'") if last else (query.after, "query parameter 'after'")
    if given is None:
        return None
    try:
        return parse_position(given)
    except ValueError:
        raise ApiError(422, f"Invalid {name}: {BAD_POSITION}") from None


def message(position: stream.StreamPosition, event_type: str, body: str) -> bytes:
    # The body is one line: PostgreSQL's JSON text escapes line breaks within strings.
    return f"id: {format_position(position)}\nevent: {event_type}\ndata: {body}\n\n".encode()


async def events_stream(request: web.Request) -> web.StreamResponse:
    locations = {name: "query" for name in (*StreamQuery.model_fields, *request.query)}
    query = validate(StreamQuery, dict(request.query), locations)
    position = _start(request, query)
    if query.user_id is not None:
        await own_user(request, query.user_id)
    if position is None:
        position = await stream.head(request.app[DEPS].db)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    try:
        await response.write(f"retry: 1000\nid: {format_position(position)}\n\n".encode())
        await _follow(request, response, query, position)
    except ConnectionResetError:
        pass  # the client left
    except TRANSIENT_DB_ERRORS as e:  # the client reconnects, to this process or another
        log.warning("event stream ended: database unavailable", error=repr(e))
    return response


async def _follow(
    request: web.Request, response: web.StreamResponse, query: StreamQuery, position: stream.StreamPosition
) -> None:
    """Send the events after the position as they settle, until the API shuts down, the key is
    revoked, or (`follow=false`) none is left."""
    deps, app_id, closing = request.app[DEPS], request[APP_ID], request.app[CLOSING]
    key, types = request.headers["X-API-Key"], query.types()
    loop = asyncio.get_running_loop()
    key_checked = last_sent = loop.time()
    while not closing.is_set():
        rows = await stream.read_events(deps.db, app_id, position, query.user_id, types, PAGE)
        if rows:
            position = rows[-1]["tx"], rows[-1]["id"]
            await response.write(b"".join(message((r["tx"], r["id"]), r["type"], r["body"]) for r in rows))
            last_sent = loop.time()
            if len(rows) == PAGE:
                continue
        if not query.follow:
            return
        now = loop.time()
        if now - last_sent >= KEEPALIVE_S:
            await response.write(b": keep-alive\n\n")
            last_sent = now
        if now - key_checked >= KEY_CACHE_S:
            if await keys.application_for_key(deps.db, key) != app_id:
                return  # the key was revoked
            key_checked = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), deps.settings.events_stream_poll_s)


async def close_streams(app: web.Application) -> None:
    """on_shutdown: every open stream ends (its client reconnects, elsewhere, with Last-Event-ID)."""
    app[CLOSING].set()
