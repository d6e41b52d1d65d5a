"""The application's users as a list, changing a user, a user's tasks, and retrying or cancelling
a task (creating, reading and deleting a user, reading a task: api/views.py)."""

import asyncpg
import structlog
from aiohttp import web

from wearsync.api.common import APP_ID, DEPS, QUEUE, ApiError, json_body, json_response, validate
from wearsync.api.data import encode_cursor, uuid_position
from wearsync.api.models import TaskPath, UserPatch, UserPath, UsersQuery, UserTasksQuery
from wearsync.api.views import EXTERNAL_ID_TAKEN, OPEN_TASKS_RETRY_AFTER_S, REFUSED_STATUS, own_user, user_json
from wearsync.db import tasks as tasks_db
from wearsync.db import users as users_db
from wearsync.tasks import NotRetryable, SyncRefused, describe_task, retry_task, task_json

log = structlog.get_logger(__name__)

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


TASK_NOT_FOUND = "Task not found"


async def retry(request: web.Request) -> web.Response:
    """POST /api/v1/tasks/{task_id}/retry: the ended sync again, as a new task (queued)."""
    path = validate(TaskPath, request.match_info, {"task_id": "path"})
    deps = request.app[DEPS]
    try:
        task_id = await retry_task(deps.db, request.app[QUEUE], request[APP_ID], path.task_id, deps.settings)
    except NotRetryable as e:
        raise ApiError(409, str(e)) from None
    except SyncRefused as e:
        retry_after = {"Retry-After": str(OPEN_TASKS_RETRY_AFTER_S)} if e.reason == "too_many_open" else None
        raise ApiError(REFUSED_STATUS[e.reason], e.detail, retry_after) from None
    if task_id is None:
        raise ApiError(404, TASK_NOT_FOUND)
    log.info("sync retried", task_id=str(task_id), retried=str(path.task_id))
    return json_response({
        "success": True,
        "async": True,
        "task_id": str(task_id),
        "message": f"Sync task {path.task_id} queued again as {task_id}. Check task status for results.",
    }, status=202)  # fmt: skip


async def cancel(request: web.Request) -> web.Response:
    """POST /api/v1/tasks/{task_id}/cancel: a queued task fails before it starts; 409 once it runs
    or ended."""
    path = validate(TaskPath, request.match_info, {"task_id": "path"})
    db = request.app[DEPS].db
    was = await tasks_db.cancel_queued_task(db, path.task_id, request[APP_ID])
    if was is None:
        raise ApiError(404, TASK_NOT_FOUND)
    if was != "queued":
        raise ApiError(409, f"The task is {was}: only a queued task can be cancelled (a running one ends by itself)")
    return json_response(await describe_task(db, path.task_id, request[APP_ID]))
