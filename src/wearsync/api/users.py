"""The application's users as a list, changing a user, and a user's tasks (creating, reading and
deleting one: api/views.py)."""

import asyncpg
from aiohttp import web

from wearsync.api.common import APP_ID, DEPS, ApiError, json_body, json_response, validate
from wearsync.api.data import encode_cursor, uuid_position
from wearsync.api.models import UserPatch, UserPath, UsersQuery, UserTasksQuery
from wearsync.api.views import EXTERNAL_ID_TAKEN, own_user, user_json
from wearsync.db import tasks as tasks_db
from wearsync.db import users as users_db
from wearsync.tasks import task_json

_LOCATIONS = {"user_id": "path", "external_id": "query", "cursor": "query", "limit": "query", "status": "query",
              "provider": "query"}  # fmt: skip


async def list_users(request: web.Request) -> web.Response:
    """GET /api/v1/users: the application's users, oldest first; `external_id` finds one."""
    query = validate(UsersQuery, dict(request.query), _LOCATIONS | {n: "query" for n in request.query})
    after = uuid_position("users", query.cursor)
    rows = await users_db.users_page(request.app[DEPS].db, request[APP_ID], query.external_id, after, query.limit + 1)
    page, more = rows[: query.limit], len(rows) > query.limit
    last = page[-1] if page else None
    cursor = encode_cursor("users", last["created_at"], str(last["public_id"])) if more and last else None
    return json_response({"data": [user_json(r) for r in page], "next_cursor": cursor})


async def update_user(request: web.Request) -> web.Response:
    """PATCH /api/v1/users/{user_id}: set or clear its external id."""
    path = validate(UserPath, request.match_info, _LOCATIONS)
    body = validate(UserPatch, await json_body(request))
    try:
        row = await users_db.set_external_id(request.app[DEPS].db, request[APP_ID], path.user_id, body.external_id)
    except asyncpg.UniqueViolationError:
        raise ApiError(409, EXTERNAL_ID_TAKEN) from None
    if row is None:
        raise ApiError(404, "User not found")
    return json_response(user_json(row))


async def user_tasks(request: web.Request) -> web.Response:
    """GET /api/v1/users/{user_id}/tasks: the user's syncs and imports, newest first."""
    locations = _LOCATIONS | {n: "query" for n in request.query} | {"user_id": "path"}
    query = validate(UserTasksQuery, {**request.query, **request.match_info}, locations)
    user_id = (await own_user(request, query.user_id))["id"]
    before = uuid_position("tasks", query.cursor)
    status = query.status.value if query.status else None
    db = request.app[DEPS].db
    rows = await tasks_db.user_tasks_page(db, user_id, status, query.provider, before, query.limit + 1)
    page, more = rows[: query.limit], len(rows) > query.limit
    last = page[-1] if page else None
    cursor = encode_cursor("tasks", last["created_at"], str(last["id"])) if more and last else None
    return json_response({"data": [task_json(r) for r in page], "next_cursor": cursor})
