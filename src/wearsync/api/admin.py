"""Applications and their API keys over the API (the `wearsync api-key` CLI does the same).

Who may: an operator key only (`wearsync api-key create --operator`, or a key made here with
`"operator": true` by another operator key); any other key gets 403 on these routes, and reaches only
its own application's users and data. An operator key manages every application: it is the
operator's, not a tenant's, credential. A revoked key stops working within the API's key cache
(30 s); an operator key loses these routes at once (checked on each call)."""

import asyncpg
from aiohttp import web

from wearsync.api.common import DEPS, ApiError, json_body, json_response, validate
from wearsync.api.models import ApplicationIn, ApplicationPath, KeyIn, KeyPath, SettingsPatch
from wearsync.db import applications, keys

OPERATORS_ONLY = "Only an operator key may manage applications and API keys (wearsync api-key create --operator)"
APPLICATION_NOT_FOUND = "Application not found"
NAME_TAKEN = "An application with this name exists already"
_PATH = {"application_id": "path", "prefix": "path"}


async def _operator(request: web.Request) -> None:
    if not await keys.is_operator_key(request.app[DEPS].db, request.headers.get("X-API-Key", "")):
        raise ApiError(403, OPERATORS_ONLY)


async def _application(request: web.Request) -> asyncpg.Record:
    path = validate(ApplicationPath, {"application_id": request.match_info["application_id"]}, _PATH)
    row = await applications.get_application(request.app[DEPS].db, path.application_id)
    if row is None:
        raise ApiError(404, APPLICATION_NOT_FOUND)
    return row


async def list_applications(request: web.Request) -> web.Response:
    await _operator(request)
    return json_response([dict(r) for r in await applications.list_applications(request.app[DEPS].db)])


async def create_application(request: web.Request) -> web.Response:
    await _operator(request)
    body = validate(ApplicationIn, await json_body(request))
    try:
        row = await applications.create_application(request.app[DEPS].db, body.name)
    except asyncpg.UniqueViolationError:
        raise ApiError(409, NAME_TAKEN) from None
    return json_response(dict(row), status=201)


async def list_keys(request: web.Request) -> web.Response:
    await _operator(request)
    app = await _application(request)
    return json_response([dict(r) for r in await keys.list_keys(request.app[DEPS].db, app["id"])])


async def create_key(request: web.Request) -> web.Response:
    await _operator(request)
    app = await _application(request)
    body = validate(KeyIn, await json_body(request))
    key, row = await keys.add_key(request.app[DEPS].db, app["id"], body.name, operator=body.operator)
    return json_response({"key": key, **dict(row)}, status=201)


async def revoke_key(request: web.Request) -> web.Response:
    await _operator(request)
    app = await _application(request)
    path = validate(KeyPath, request.match_info, _PATH)
    matches = await keys.revoke_api_key(request.app[DEPS].db, path.prefix, app["id"])
    if matches == 0:
        raise ApiError(404, "No active key of this application has this prefix")
    if matches > 1:
        raise ApiError(409, f"{matches} active keys have this prefix: none revoked")
    return json_response({"prefix": path.prefix, "revoked": True})


async def get_settings(request: web.Request) -> web.Response:
    await _operator(request)
    app = await _application(request)
    row = await applications.get_settings(request.app[DEPS].db, app["id"])
    assert row is not None
    return json_response(dict(row))


async def update_settings(request: web.Request) -> web.Response:
    await _operator(request)
    app = await _application(request)
    body = validate(SettingsPatch, await json_body(request))
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    row = await applications.set_settings(request.app[DEPS].db, app["id"], changes)
    if row is None:
        raise ApiError(404, APPLICATION_NOT_FOUND)
    return json_response(dict(row))
