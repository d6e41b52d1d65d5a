"""Sync tasks as the API and the operators' CLI see them: starting one (after its request is
validated: the provider supports what is asked, the user is connected; then a task row, then its
job), running one inside a sync call (`async=false`), and describing one (`GET /api/v1/tasks/{id}`,
`wearsync sync --wait`). One path for both, so the CLI checks and coalesces exactly as the API
does."""

import asyncio
import contextlib
from typing import Any, Literal
from uuid import UUID, uuid4

import asyncpg
import structlog
from arq import ArqRedis

from wearsync.db import TRANSIENT_DB_ERRORS, garmin_backfills
from wearsync.db import tasks as tasks_db
from wearsync.deps import Deps, rate_limit_prefix
from wearsync.models import FINAL_STATUSES, DataType, Requested, SyncParams, TaskStatus
from wearsync.providers import PROVIDERS
from wearsync.providers.ratelimit import RateLimiter
from wearsync.queue import QUEUE_UNAVAILABLE, continue_in_new_job, enqueue_task
from wearsync.settings import Settings
from wearsync.sync import NO_CONNECTION, run_task

log = structlog.get_logger(__name__)

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


def requested_types(provider_name: str, requested: Requested) -> list[DataType]:
    """The data types a sync runs: with `all`, those the provider supports; otherwise the one
    asked for, which it must support."""
    provider = PROVIDERS[provider_name]
    if requested == "all":
        return [t for t in DataType if t in provider.supports]
    for t in _REQUESTED[requested]:
        if t not in provider.supports:
            raise SyncRefused("unsupported", _UNSUPPORTED[t].format(provider.name))
    return list(_REQUESTED[requested])


async def start_sync(
    db: asyncpg.Pool,
    queue: ArqRedis,
    app_id: UUID,
    provider: str,
    user_id: UUID,
    data_types: list[DataType],
    params: SyncParams,
    *,
    run_async: bool,
    settings: Settings | None = None,
) -> tuple[UUID, bool]:
    """(task id, created) of a sync of `data_types` (see requested_types) for user `user_id` (its
    key) of application `app_id`; an identical sync already queued or running is that task
    (created False). With `run_async` the new task's job is enqueued; otherwise the caller runs it
    itself (run_sync_call). With `settings`, a new task past its WEARSYNC_MAX_OPEN_TASKS_PER_USER /
    _PER_APP is refused (`too_many_open`): however its parameters vary, one tenant cannot queue
    work without bound ahead of the others."""
    try:
        task_id, created = await tasks_db.create_task(
            db,
            task_id=uuid4(),
            app_id=app_id,
            user_id=user_id,
            provider=provider,
            mode="async" if run_async else "sync",
            data_types=data_types,
            params=PROVIDERS[provider].task_params(params),
            max_open_per_user=settings.max_open_tasks_per_user if settings else None,
            max_open_per_app=settings.max_open_tasks_per_app if settings else None,
        )
    except tasks_db.TooManyOpenTasks as e:
        raise SyncRefused(
            "too_many_open", f"The {e.scope} already has {e.limit} syncs queued or running; try again once some finish"
        ) from None
    if task_id is None:  # no active connection to the provider (or not this application's user)
        raise SyncRefused("not_connected", NO_CONNECTION)
    if created and run_async:
        try:
            await enqueue_task(queue, str(task_id))
        except Exception:
            # Not left queued forever (and coalescing every later request onto it).
            await tasks_db.finish_task(db, task_id, TaskStatus.FAILED, None, "could not enqueue the task")
            raise
        if settings is not None:
            await _announce(queue, settings, provider, app_id, user_id)
    return task_id, created


async def _announce(queue: ArqRedis, settings: Settings, provider: str, app_id: UUID, user_id: UUID) -> None:
    """The application and user of a queued sync count in the provider's fair shares at once: the
    jobs of one flooding the limit then keep to their share and give their worker slots up, so
    that this sync's job starts, instead of waiting for the flood's jobs to end."""
    bucket = PROVIDERS[provider].bucket(settings, app_id, user_id)
    limiter = RateLimiter(queue, prefix=rate_limit_prefix(settings))
    try:
        await limiter.announce(bucket.name, bucket.limits, bucket.tenant, bucket.user)
    except QUEUE_UNAVAILABLE as e:  # queued all the same: its job announces it when it asks
        log.warning("sync not announced to the rate limiter", error=repr(e))


class NotRetryable(Exception):
    """Only a provider sync that ended (failed, partial or succeeded) can run again."""


async def retry_task(db: asyncpg.Pool, queue: ArqRedis, app_id: UUID, task_id: UUID, settings: Settings) -> UUID | None:
    """A new task running the application's ended sync `task_id` again, with its data types and
    parameters (from where its user's cursors are now), or the same sync already open; None for no
    such task. NotRetryable for an open task or an import (whose file is not kept); SyncRefused as
    start_sync (the connection gone, too many open tasks)."""
    task = await tasks_db.get_task(db, task_id, app_id)
    if task is None:
        return None
    if task["status"] not in FINAL_STATUSES:
        raise NotRetryable(f"The task is {task['status']}: only one that ended can be retried")
    if task["provider"] not in PROVIDERS:
        raise NotRetryable("An import cannot be retried (its file is not kept): upload the file again")
    params = SyncParams.model_validate(task["params"])
    data_types = [DataType(t) for t in task["data_types"]]
    new_id, _ = await start_sync(
        db, queue, app_id, task["provider"], task["user_id"], data_types, params, run_async=True, settings=settings
    )
    return new_id


class JoinTimedOut(Exception):
    """The same sync was already open and did not end within WEARSYNC_SYNC_JOIN_WAIT_S."""


async def run_sync_call(deps: Deps, queue: ArqRedis, task_id: UUID, created: bool) -> dict[str, bool]:
    """Per-type success of a sync call's task (start_sync without `run_async`): run here when
    `created`, or else (the same sync already open) its outcome, waited for up to
    WEARSYNC_SYNC_JOIN_WAIT_S (then JoinTimedOut). A run cut off (the API stopping cancels it, or
    the database fails it mid-way) hands its task over to a worker, which resumes it from its
    progress; the caller, cut off, finds it by asking again."""
    if not created:
        try:
            async with asyncio.timeout(deps.settings.sync_join_wait_s):
                return await _outcome(deps.db, task_id)
        except TimeoutError:
            raise JoinTimedOut() from None
    # The API stopping cancels this call; the hand-over it then makes must be waited for before the
    # pools close, and may start after the shutdown already looked for hand-overs.
    this_call = asyncio.current_task()
    assert this_call is not None
    deps.handovers.add(this_call)
    with structlog.contextvars.bound_contextvars(task_id=str(task_id)):  # as a worker's job lines
        try:
            return await run_task(deps, task_id) or {}
        except asyncio.CancelledError:
            # The API is stopping and the grace for requests ran out: a worker takes the task over.
            await continue_in_new_job(deps, queue, str(task_id))
            log.warning("sync cut off by shutdown, handed to a worker")
            raise
        except TRANSIENT_DB_ERRORS:
            # The database failed the sync mid-way (the caller gets a 503): a worker takes the task
            # over from its progress, or, the database still failing, the reaper does later.
            with contextlib.suppress(*TRANSIENT_DB_ERRORS, *QUEUE_UNAVAILABLE):
                await continue_in_new_job(deps, queue, str(task_id))
                log.warning("sync cut off by the database, handed to a worker")
            raise
        finally:
            deps.handovers.discard(this_call)


async def _outcome(db: asyncpg.Pool, task_id: UUID, poll_s: float = 0.2) -> dict[str, bool]:
    while True:
        task = await tasks_db.get_task(db, task_id)
        if task is not None and task["status"] in FINAL_STATUSES:
            result: dict[str, bool] = task["result"] or {t: False for t in task["data_types"]}
            return result
        await asyncio.sleep(poll_s)


def shown_progress(progress: dict[str, Any]) -> dict[str, Any]:
    """A task's progress as the API shows it: without `done` (which pages are stored, for a rerun
    to skip), the worker's bookkeeping."""
    return {t: {k: v for k, v in p.items() if k != "done"} for t, p in progress.items()}


async def describe_task(db: asyncpg.Pool, task_id: UUID, app_id: UUID | None = None) -> dict[str, Any] | None:
    """A task as `GET /api/v1/tasks/{id}` shows it (None if unknown, or another application's)."""
    row = await tasks_db.get_task(db, task_id) if app_id is None else await tasks_db.get_task_shown(db, task_id, app_id)
    if row is None:
        return None
    task = task_json(row)
    provider = PROVIDERS.get(task["provider"])  # None for an import
    if provider is not None and provider.deliveries is not None:  # its data comes later: what was asked, what came
        task["backfill"] = await garmin_backfills.garmin_backfill_summary(db, task_id)
    return task


def task_json(row: asyncpg.Record) -> dict[str, Any]:
    """A task row as the API shows it (without a Garmin task's backfill, which describe_task adds)."""
    task = dict(row)
    started, finished = task["started_at"], task["finished_at"]
    task["progress"] = shown_progress(task["progress"])
    return {
        "task_id": task.pop("id"),
        **task,
        "duration_s": (finished - started).total_seconds() if started and finished else None,
    }
