"""Sync tasks as the API and the operators' CLI see them: starting one (after its request is
validated: the provider supports what is asked, the user is connected; then a task row, then its
job) and describing one (`GET /api/v1/tasks/{id}`, `wearsync sync --wait`). One path for both, so
the CLI checks and coalesces exactly as the API does."""

from typing import Any, Literal
from uuid import UUID, uuid4

import asyncpg
from arq import ArqRedis

from wearsync.api.models import SyncRequest
from wearsync.db import garmin_backfills
from wearsync.db import tasks as tasks_db
from wearsync.models import DataType, TaskStatus, params_for
from wearsync.providers import PROVIDERS
from wearsync.queue import enqueue_task
from wearsync.settings import Settings
from wearsync.sync import NO_CONNECTION

_REQUESTED = {"workouts": (DataType.WORKOUTS,), "247": (DataType.DATA_247,), "all": tuple(DataType)}
_UNSUPPORTED = {
    DataType.WORKOUTS: "Provider '{}' does not support workouts",
    DataType.DATA_247: "Provider '{}' does not support 247 data (sleep/recovery/activity)",
}


class SyncRefused(Exception):
    """A valid request that cannot start: the provider does not support a data type asked for
    (`unsupported`), the user has no active connection to it (`not_connected`), or the user or
    the application has as many syncs queued or running as it may (`too_many_open`)."""

    def __init__(self, reason: Literal["unsupported", "not_connected", "too_many_open"], detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def requested_types(req: SyncRequest) -> list[DataType]:
    """The data types a sync runs: with `all`, those the provider supports; otherwise the one
    asked for, which it must support."""
    provider = PROVIDERS[req.provider]
    if req.data_type == "all":
        return [t for t in DataType if t in provider.supports]
    for t in _REQUESTED[req.data_type]:
        if t not in provider.supports:
            raise SyncRefused("unsupported", _UNSUPPORTED[t].format(provider.name))
    return list(_REQUESTED[req.data_type])


async def start_sync(
    db: asyncpg.Pool, queue: ArqRedis, app_id: UUID, req: SyncRequest, settings: Settings | None = None
) -> tuple[UUID, bool]:
    """(task id, created) of the sync `req` asks for, for a user of application `app_id`; an
    identical sync already queued or running is that task (created False). Async requests
    enqueue the new task's job; a sync-mode caller runs it itself. With `settings`, a new task past
    its WEARSYNC_MAX_OPEN_TASKS_PER_USER / _PER_APP is refused (`too_many_open`): however its
    parameters vary, one tenant cannot queue work without bound ahead of the others."""
    data_types = requested_types(req)
    try:
        task_id, created = await tasks_db.create_task(
            db,
            task_id=uuid4(),
            app_id=app_id,
            user_id=req.user_id,
            provider=req.provider,
            mode="async" if req.run_async else "sync",
            data_types=data_types,
            params=params_for(req.provider, req.params()),
            max_open_per_user=settings.max_open_tasks_per_user if settings else None,
            max_open_per_app=settings.max_open_tasks_per_app if settings else None,
        )
    except tasks_db.TooManyOpenTasks as e:
        raise SyncRefused(
            "too_many_open", f"The {e.scope} already has {e.limit} syncs queued or running; try again once some finish"
        ) from None
    if task_id is None:  # no active connection to the provider (or not this application's user)
        raise SyncRefused("not_connected", NO_CONNECTION)
    if created and req.run_async:
        try:
            await enqueue_task(queue, str(task_id))
        except Exception:
            # Not left queued forever (and coalescing every later request onto it).
            await tasks_db.finish_task(db, task_id, TaskStatus.FAILED, None, "could not enqueue the task")
            raise
    return task_id, created


async def describe_task(db: asyncpg.Pool, task_id: UUID, app_id: UUID | None = None) -> dict[str, Any] | None:
    """A task as `GET /api/v1/tasks/{id}` shows it (None if unknown, or another application's)."""
    row = await tasks_db.get_task(db, task_id) if app_id is None else await tasks_db.get_task_shown(db, task_id, app_id)
    if row is None:
        return None
    task = dict(row)
    started, finished = task["started_at"], task["finished_at"]
    # `done` (which pages are stored, for a rerun to skip) is the worker's bookkeeping.
    task["progress"] = {t: {k: v for k, v in p.items() if k != "done"} for t, p in task["progress"].items()}
    if task["provider"] == "garmin":  # its data comes by webhook: what was asked, what has come
        task["backfill"] = await garmin_backfills.garmin_backfill_summary(db, task_id)
    return {
        "task_id": task.pop("id"),
        **task,
        "duration_s": (finished - started).total_seconds() if started and finished else None,
    }
