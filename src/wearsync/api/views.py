"""Handlers. Each validates its input with a model from api/models.py, then does one thing."""

import asyncio
import contextlib
from asyncio import timeout as asyncio_timeout
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import asyncpg
import structlog
from aiohttp import web

from wearsync import metrics_server
from wearsync.api.common import APP_ID, DEPS, QUEUE, ApiError, json_body, json_response, validate
from wearsync.api.models import ConnectionIn, ConnectionPath, ConnectionPut, SyncRequest, TaskPath, UserIn, UserPath
from wearsync.api.quotas import OverLimit, sync_call_place
from wearsync.app_settings import PROVIDER_NOT_ENABLED, provider_enabled
from wearsync.db import connections, retention
from wearsync.models import DataType
from wearsync.oauth import AccountUnknown, learn_account, save_connection
from wearsync.providers import PROVIDERS
from wearsync.providers.tokens import TokenSet
from wearsync.revocation import disconnect
from wearsync.settings import webhook_queue_name
from wearsync.sync import NO_CONNECTION
from wearsync.tasks import JoinTimedOut, SyncRefused, describe_task, requested_types, run_sync_call, start_sync

log = structlog.get_logger(__name__)

_PATH = {"provider": "path", "user_id": "path", "task_id": "path"}
_SYNC_LOCATIONS = {(f.alias or name): "query" for name, f in SyncRequest.model_fields.items()} | _PATH
REFUSED_STATUS = {"unsupported": 501, "not_connected": 404, "too_many_open": 429}
# A sync refused for the open tasks of its user or application may try again about this much later.
OPEN_TASKS_RETRY_AFTER_S = 60


async def trigger_sync(request: web.Request) -> web.Response:
    """POST /api/v1/{provider}/users/{user_id}/sync: checks in the contract's order (the key was
    checked by the middleware), then a task row, then the job or the sync itself."""
    req = validate(SyncRequest, {**request.query, **request.match_info}, _SYNC_LOCATIONS)
    if req.run_async:
        task_id, created = await _start(request, req)
        log.info("sync queued", task_id=str(task_id), provider=req.provider, coalesced=not created)
        return json_response({
            "success": True,
            "async": True,
            "task_id": str(task_id),
            "message": f"Sync task queued for {req.provider}. Check task status for results.",
        })  # fmt: skip
    _requested_types(req)  # 501 before a 429 for the application's sync calls
    async with _sync_call_place(request):
        return await _sync_call(request, req)


async def _start(request: web.Request, req: SyncRequest) -> tuple[UUID, bool]:
    deps = request.app[DEPS]
    data_types = _requested_types(req)  # 501 before 404, in the contract's order
    user = await connections.get_user(deps.db, request[APP_ID], req.user_id)
    if user is None:  # not this application's user: as one without the connection
        raise ApiError(404, NO_CONNECTION)
    if not await provider_enabled(deps.db, request[APP_ID], req.provider):
        raise ApiError(403, PROVIDER_NOT_ENABLED)
    try:
        return await start_sync(
            deps.db, request.app[QUEUE], request[APP_ID], req.provider, user["id"], data_types, req.params(),
            run_async=req.run_async, settings=deps.settings,
        )  # fmt: skip
    except SyncRefused as e:
        retry = {"Retry-After": str(OPEN_TASKS_RETRY_AFTER_S)} if e.reason == "too_many_open" else None
        raise ApiError(REFUSED_STATUS[e.reason], e.detail, retry) from None


def _requested_types(req: SyncRequest) -> list[DataType]:
    try:
        return requested_types(req.provider, req.data_type)
    except SyncRefused as e:
        raise ApiError(REFUSED_STATUS[e.reason], e.detail) from None


# A sync call refused for the application's other calls may try again about this much later.
SYNC_CALL_RETRY_AFTER_S = 10


@contextlib.asynccontextmanager
async def _sync_call_place(request: web.Request) -> AsyncIterator[None]:
    """One of the application's WEARSYNC_SYNC_CALLS_PER_APP sync calls across every API process, or
    429: a sync call holds its request (and, while it writes, a connection of the API's pool) for
    as long as the provider takes, so one tenant's many must not take the API from the others."""
    limit = request.app[DEPS].settings.sync_calls_per_app
    try:
        async with sync_call_place(request.app[QUEUE], request.app[DEPS].settings.queue_name, request[APP_ID], limit):
            yield
    except OverLimit:
        raise ApiError(
            429,
            f"This application already has {limit} sync calls (async=false) running; wait for one to "
            "finish, or queue the sync (async=true) and follow its task",
            {"Retry-After": str(SYNC_CALL_RETRY_AFTER_S)},
        ) from None


async def _sync_call(request: web.Request, req: SyncRequest) -> web.Response:
    """A sync run inside the request (async=false), or the outcome of the same sync already open."""
    settings = request.app[DEPS].settings
    task_id, created = await _start(request, req)
    try:
        details = await run_sync_call(request.app[DEPS], request.app[QUEUE], task_id, created)
    except JoinTimedOut:
        raise ApiError(
            504,
            f"The same sync is already open (task {task_id}) and did not finish within "
            f"{settings.sync_join_wait_s:g} s; follow it at /api/v1/tasks/{task_id}",
        ) from None
    return json_response({"success": all(details.values()), "details": details, "task_id": str(task_id)})


async def get_task(request: web.Request) -> web.Response:
    path = validate(TaskPath, request.match_info, _PATH)
    task = await describe_task(request.app[DEPS].db, path.task_id, request[APP_ID])
    if task is None:
        raise ApiError(404, "Task not found")
    return json_response(task)


EXTERNAL_ID_TAKEN = "A user with this external_id already exists in this application"


def user_json(row: asyncpg.Record) -> dict[str, object]:
    return {"id": row["public_id"], "external_id": row["external_id"], "created_at": row["created_at"]}


async def create_user(request: web.Request) -> web.Response:
    body = validate(UserIn, await json_body(request, optional=True))
    try:
        row = await connections.create_user(request.app[DEPS].db, request[APP_ID], body.id or uuid4(), body.external_id)
    except asyncpg.UniqueViolationError:
        raise ApiError(409, "A user with this id or external_id already exists in this application") from None
    return json_response(user_json(row), status=201)


async def own_user(request: web.Request, user_id: UUID) -> asyncpg.Record:
    """The caller's application's user with this (API) id: `id` is its key in every table; another
    application's user with the same id is another user."""
    row = await connections.get_user(request.app[DEPS].db, request[APP_ID], user_id)
    if row is None:
        raise ApiError(404, "User not found")
    return row


async def get_user(request: web.Request) -> web.Response:
    path = validate(UserPath, request.match_info, _PATH)
    return json_response(user_json(await own_user(request, path.user_id)))


def _connection_json(row: asyncpg.Record, user_id: UUID) -> dict[str, object]:
    """A connection without its tokens: they never leave the service."""
    keys = (
        "provider",
        "provider_user_id",
        "expires_at",
        "scopes",
        "active",
        "inactive_reason",
        "created_at",
        "updated_at",
    )
    return {"user_id": user_id, **{k: row[k] for k in keys}}


async def put_connection(request: web.Request) -> web.Response:
    path = validate(ConnectionPut, {**request.query, **request.match_info}, _PATH | {"move": "query"})
    body = validate(ConnectionIn, await json_body(request))
    user_id = (await own_user(request, path.user_id))["id"]
    deps = request.app[DEPS]
    if not await provider_enabled(deps.db, request[APP_ID], path.provider):
        raise ApiError(403, PROVIDER_NOT_ENABLED)
    handed = TokenSet(
        access_token=body.access_token, refresh_token=body.refresh_token, expires_at=body.expires_at,
        scopes=body.scopes, provider_user_id=body.provider_user_id, raw={},
    )  # fmt: skip
    provider, config = PROVIDERS[path.provider], deps.settings.providers[path.provider]
    try:
        # An upstream call: no database connection is held across it.
        tokens = await learn_account(deps.http, provider, config, user_id, handed)
    except AccountUnknown as e:
        raise ApiError(e.status, e.detail) from None
    assert tokens.provider_user_id is not None
    try:
        row = await save_connection(
            deps.db, deps.settings.cipher(), user_id, path.provider, move=path.move,
            access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_at=tokens.expires_at,
            provider_user_id=tokens.provider_user_id, scopes=tokens.scopes,
        )  # fmt: skip
    except connections.AccountTaken as e:
        other = await connections.public_user_id(deps.db, e.user_id)
        raise ApiError(409, account_taken(path.provider, tokens.provider_user_id, other)) from None
    return json_response(_connection_json(row, path.user_id))


def account_taken(provider: str, provider_user_id: str, other: UUID | None) -> str:
    return (
        f"The {provider} account '{provider_user_id}' is already connected to user {other} of this"
        " application: disconnect it there first, or send move=true to move it to this user"
    )


async def list_connections(request: web.Request) -> web.Response:
    path = validate(UserPath, request.match_info, _PATH)
    user_id = (await own_user(request, path.user_id))["id"]
    rows = await connections.list_connections(request.app[DEPS].db, user_id)
    return json_response([_connection_json(r, path.user_id) for r in rows])


async def delete_user(request: web.Request) -> web.Response:
    """Delete a user and everything stored about them: our access withdrawn at each provider first
    (best effort, as disconnecting does), then the data. A request cut off before it answers can be
    sent again; it goes on where it stopped."""
    path = validate(UserPath, request.match_info, _PATH)
    user_id = (await own_user(request, path.user_id))["id"]
    deps = request.app[DEPS]
    active = [row for row in await connections.list_connections(deps.db, user_id) if row["active"]]
    # Deactivated as they are revoked: a repeat does not revoke again.
    outcomes = await asyncio.gather(*(disconnect(deps, row) for row in active))
    deleted = await retention.delete_user(deps.db, user_id)
    log.info("user deleted", user_id=str(path.user_id), **deleted)
    return json_response({
        "user_id": path.user_id,
        "deleted": deleted,
        "connections": [
            {"provider": row["provider"], **outcome} for row, outcome in zip(active, outcomes, strict=True)
        ],
    })  # fmt: skip


async def delete_connection(request: web.Request) -> web.Response:
    """Withdraw our access at the provider where it allows (best effort), then deactivate the
    connection (its data stays); the answer says whether the provider was told."""
    path = validate(ConnectionPath, request.match_info, _PATH)
    user_id = (await own_user(request, path.user_id))["id"]
    deps = request.app[DEPS]
    row = await connections.get_active_connection(deps.db, user_id, path.provider)
    if row is None:
        raise ApiError(404, NO_CONNECTION)
    outcome = await disconnect(deps, row)
    return json_response({"user_id": path.user_id, "provider": path.provider, "active": False, **outcome})


async def health(request: web.Request) -> web.Response:
    """Checks PostgreSQL and Redis; 503 names the one that failed."""
    deps = request.app[DEPS]
    checks: dict[str, str] = {}
    try:
        async with asyncio_timeout(2):
            await deps.db.fetchval("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as e:
        checks["postgres"] = f"unavailable: {type(e).__name__}"
    try:
        async with asyncio_timeout(2):
            await request.app[QUEUE].ping()
        checks["redis"] = "ok"
    except Exception as e:
        checks["redis"] = f"unavailable: {type(e).__name__}"
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        return json_response({"detail": f"Unavailable: {', '.join(failed)}", **checks}, status=503)
    return json_response({"status": "ok", **checks})


async def scrape(request: web.Request) -> web.StreamResponse:
    """GET /metrics: this process's metrics, with the queue depth and open tasks counted now."""
    deps = request.app[DEPS]
    if not metrics_server.authorized(request, deps.settings.metrics_token):
        raise ApiError(401, metrics_server.INVALID_TOKEN)
    await metrics_server.count_open_work(
        deps.db, request.app[QUEUE], deps.settings.queue_name, webhook_queue_name(deps.settings)
    )
    return await metrics_server.expose(request)
