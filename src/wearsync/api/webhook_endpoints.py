"""Outgoing webhooks, per application: its endpoints (the secret shown once, rotated with an
overlap), a test event, an event's delivery attempts, and replays. Another application's endpoint
or event answers 404, as one that does not exist."""

from typing import Any

import asyncpg
from aiohttp import web

from wearsync.api.common import APP_ID, DEPS, ApiError, json_body, json_response, validate
from wearsync.api.webhook_models import (
    EndpointIn,
    EndpointPatch,
    EndpointPath,
    EventPath,
    ReplayIn,
    ReplayOne,
    RotateIn,
)
from wearsync.db import deliveries, endpoints
from wearsync.outbox import new_secret, refused_url

_LOCATIONS = {"endpoint_id": "path", "event_id": "path"}
NOT_FOUND = "Webhook endpoint not found"
EVENT_NOT_FOUND = "Event not found"
REPLAY_LIMIT = 10000


def _endpoint_json(row: asyncpg.Record, secret: str | None = None) -> dict[str, Any]:
    shown = dict(row)
    return shown | {"secret": secret} if secret is not None else shown


async def _check_url(request: web.Request, url: str) -> None:
    why = await refused_url(url, request.app[DEPS].settings.events_allow_private_urls)
    if why is not None:
        raise ApiError(400, f"Webhook URL refused: {why}")


async def create_endpoint(request: web.Request) -> web.Response:
    body = validate(EndpointIn, await json_body(request))
    await _check_url(request, body.url)
    deps = request.app[DEPS]
    secret = new_secret()
    sealed = deps.settings.cipher().seal(secret)
    assert sealed is not None
    row = await endpoints.create_endpoint(
        deps.db, request[APP_ID], body.url, body.event_types, body.description, sealed
    )
    return json_response(_endpoint_json(row, secret), status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    rows = await endpoints.list_endpoints(request.app[DEPS].db, request[APP_ID])
    return json_response([_endpoint_json(r) for r in rows])


async def get_endpoint(request: web.Request) -> web.Response:
    path = validate(EndpointPath, request.match_info, _LOCATIONS)
    row = await endpoints.get_endpoint(request.app[DEPS].db, request[APP_ID], path.endpoint_id)
    if row is None:
        raise ApiError(404, NOT_FOUND)
    return json_response(_endpoint_json(row))


async def update_endpoint(request: web.Request) -> web.Response:
    path = validate(EndpointPath, request.match_info, _LOCATIONS)
    body = validate(EndpointPatch, await json_body(request))
    changes = body.model_dump(exclude_unset=True)
    if changes.get("url") is None:
        changes.pop("url", None)
    else:
        await _check_url(request, changes["url"])
    row = await endpoints.update_endpoint(request.app[DEPS].db, request[APP_ID], path.endpoint_id, changes)
    if row is None:
        raise ApiError(404, NOT_FOUND)
    return json_response(_endpoint_json(row))


async def delete_endpoint(request: web.Request) -> web.Response:
    path = validate(EndpointPath, request.match_info, _LOCATIONS)
    if not await endpoints.delete_endpoint(request.app[DEPS].db, request[APP_ID], path.endpoint_id):
        raise ApiError(404, NOT_FOUND)
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    path = validate(EndpointPath, request.match_info, _LOCATIONS)
    body = validate(RotateIn, await json_body(request, optional=True))
    deps = request.app[DEPS]
    overlap = body.overlap_s if body.overlap_s is not None else deps.settings.events_secret_overlap_s
    secret = new_secret()
    sealed = deps.settings.cipher().seal(secret)
    assert sealed is not None
    row = await endpoints.rotate_secret(deps.db, request[APP_ID], path.endpoint_id, sealed, overlap)
    if row is None:
        raise ApiError(404, NOT_FOUND)
    return json_response(_endpoint_json(row, secret))


async def send_test(request: web.Request) -> web.Response:
    path = validate(EndpointPath, request.match_info, _LOCATIONS)
    event_id = await endpoints.send_test_event(request.app[DEPS].db, request[APP_ID], path.endpoint_id)
    if event_id is None:
        raise ApiError(404, NOT_FOUND)
    return json_response({"event_id": event_id}, status=202)


async def replay(request: web.Request) -> web.Response:
    path = validate(EndpointPath, request.match_info, _LOCATIONS)
    body = validate(ReplayIn, await json_body(request)).root
    db, app_id = request.app[DEPS].db, request[APP_ID]
    if await endpoints.get_endpoint(db, app_id, path.endpoint_id) is None:
        raise ApiError(404, NOT_FOUND)
    if isinstance(body, ReplayOne):
        count = await deliveries.replay(db, app_id, path.endpoint_id, body.event_id, None, None, REPLAY_LIMIT)
        if count == 0:
            raise ApiError(404, EVENT_NOT_FOUND)
    else:
        count = await deliveries.replay(db, app_id, path.endpoint_id, None, body.since, body.until, REPLAY_LIMIT)
    return json_response({"replayed": count}, status=202)


async def event_deliveries(request: web.Request) -> web.Response:
    path = validate(EventPath, request.match_info, _LOCATIONS)
    row = await deliveries.event_deliveries(request.app[DEPS].db, request[APP_ID], path.event_id)
    if row is None:
        raise ApiError(404, EVENT_NOT_FOUND)
    return json_response({"event_id": row["public_id"], "type": row["type"], "created_at": row["created_at"],
                          "deliveries": row["deliveries"]})  # fmt: skip
