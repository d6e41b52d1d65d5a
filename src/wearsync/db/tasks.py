"""Sync tasks and their progress."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from wearsync.db import Executor, events, readable
from wearsync.models import TaskStatus

_TASK_COLUMNS = (
    "id, user_id, provider, mode, data_types, params, status::text AS status, progress, result, error,"
    " attempts, created_at, started_at, finished_at, updated_at"
)


# A task as the API shows it: its user by the API's id.
_TASK_API_COLUMNS = (
    "t.id, u.public_id AS user_id, t.provider, t.mode, t.data_types, t.params, t.status::text AS status, t.progress,"
    " t.result, t.error, t.attempts, t.created_at, t.started_at, t.finished_at, t.updated_at"
)


_TYPE_PROGRESS: dict[str, Any] = {
    "status": "queued",
    "pages": 0,
    "pages_total": None,
    "records": {},
    "done": {},
    "error": None,
}


def initial_progress(data_types: Sequence[str]) -> dict[str, Any]:
    return {t: dict(_TYPE_PROGRESS) for t in data_types}


class TooManyOpenTasks(Exception):
    """A new task would take the user's or the application's open tasks past their cap."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"the {scope} already has {limit} syncs queued or running")
        self.scope, self.limit = scope, limit


async def create_task(
    db: Executor,
    *,
    task_id: UUID,
    app_id: UUID,
    user_id: UUID,
    provider: str,
    mode: str,
    data_types: Sequence[str],
    params: Mapping[str, Any],
    max_open_per_user: int | None = None,
    max_open_per_app: int | None = None,
) -> tuple[UUID | None, bool]:
    """A task for this sync, if the user (of this application) has an active connection to the
    provider: (task_id, True) when created; (the id of the identical task that is queued or
    running, False): the same sync is never run twice at once (coalescing); (None, False) without
    an active connection. One round trip in the common case. A new task that would take the user's
    or the application's open tasks past `max_open_per_user` / `max_open_per_app` (None: no cap)
    raises TooManyOpenTasks; the identical open task is still found (coalescing adds none)."""
    for _ in range(3):  # the open task may finish between the insert and the lookup
        row = await db.fetchrow(
            """
            WITH connected AS (
                SELECT EXISTS (
                    SELECT 1 FROM provider_connections c JOIN users u ON u.id = c.user_id
                    WHERE c.user_id = $3 AND c.provider = $4 AND c.active AND u.application_id = $2
                ) AS ok
            ), open AS (
                SELECT
                    (SELECT count(*) FROM sync_tasks WHERE user_id = $3 AND status IN ('queued', 'running'))
                        < coalesce($9, 2147483647) AS user_ok,
                    (SELECT count(*) FROM sync_tasks WHERE application_id = $2 AND status IN ('queued', 'running'))
                        < coalesce($10, 2147483647) AS app_ok
            ), created AS (
                INSERT INTO sync_tasks (id, application_id, user_id, provider, mode, data_types, params, progress)
                SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM connected, open WHERE ok AND user_ok AND app_ok
                ON CONFLICT (user_id, provider, data_types, params) WHERE status IN ('queued', 'running') DO NOTHING
                RETURNING id
            )
            SELECT (SELECT ok FROM connected) AS connected, (SELECT id FROM created) AS id, open.* FROM open
            """,
            task_id,
            app_id,
            user_id,
            provider,
            mode,
            list(data_types),
            dict(params),
            initial_progress(data_types),
            max_open_per_user,
            max_open_per_app,
        )
        assert row is not None
        if not row["connected"]:
            return None, False
        if row["id"] is not None:
            return row["id"], True
        existing = await db.fetchval(
            "SELECT id FROM sync_tasks WHERE user_id = $1 AND provider = $2 AND data_types = $3 AND params = $4"
            " AND status IN ('queued', 'running')",
            user_id,
            provider,
            list(data_types),
            dict(params),
        )
        if existing is not None:
            return existing, False
        if not row["user_ok"]:
            raise TooManyOpenTasks("user", max_open_per_user or 0)
        if not row["app_ok"]:
            raise TooManyOpenTasks("application", max_open_per_app or 0)
    raise RuntimeError("could not create or find the sync task")


async def get_task(db: Executor, task_id: UUID, app_id: UUID | None = None) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {_TASK_COLUMNS} FROM sync_tasks WHERE id = $1 AND ($2::uuid IS NULL OR application_id = $2)",
        task_id,
        app_id,
    )
    return row


async def get_task_shown(db: Executor, task_id: UUID, app_id: UUID) -> asyncpg.Record | None:
    """The application's task as the API shows it (its user by the API's id)."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {_TASK_API_COLUMNS} FROM sync_tasks t JOIN users u ON u.id = t.user_id"
        " WHERE t.id = $1 AND t.application_id = $2",
        task_id,
        app_id,
    )
    return row


async def start_task(db: Executor, task_id: UUID) -> asyncpg.Record | None:
    """Mark a queued or interrupted task running. Progress is kept: a rerun (a deferred or crashed
    job) skips the data types that succeeded and the pages already stored (`done`), and redoes
    the rest; the upserts make a redone page harmless. None if the task is unknown or final."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"""
        UPDATE sync_tasks SET status = 'running', attempts = attempts + 1,
            started_at = coalesce(started_at, now()), updated_at = now(),
            progress = (
                SELECT jsonb_object_agg(t, CASE WHEN progress -> t ->> 'status' = 'succeeded' THEN progress -> t
                    ELSE $2::jsonb || coalesce(progress -> t, '{{}}') || '{{"status": "running", "error": null}}'
                    END)
                FROM unnest(data_types) AS t)
        WHERE id = $1 AND status IN ('queued', 'running')
        RETURNING {_TASK_COLUMNS}
        """,
        task_id,
        _TYPE_PROGRESS,
    )
    return row


async def possibly_lost_tasks(db: Executor, queued_for_s: float, idle_for_s: float) -> list[asyncpg.Record]:
    """Tasks whose job may be lost: queued for longer than `queued_for_s`, or running with no
    progress for longer than `idle_for_s`; (id, status, job_id)."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT id, status::text AS status, coalesce(job_id, id::text) AS job_id FROM sync_tasks
        WHERE (status = 'queued' AND created_at < now() - make_interval(secs => $1))
           OR (status = 'running' AND updated_at < now() - make_interval(secs => $2)
               AND deliveries_due_at IS NULL)  -- its job ended: it waits for webhook deliveries
        ORDER BY created_at LIMIT 1000
        """,
        float(queued_for_s),
        float(idle_for_s),
    )
    return rows


async def open_task_counts(db: Executor) -> dict[tuple[str, str], int]:
    """Tasks queued or running, per (provider, status): the partial index of open tasks answers it."""
    rows = await db.fetch(
        "SELECT provider, status::text AS status, count(*) AS n FROM sync_tasks"
        " WHERE status IN ('queued', 'running') GROUP BY provider, status"
    )
    return {(r["provider"], r["status"]): r["n"] for r in rows}


async def set_task_job(db: Executor, task_id: UUID, job_id: str, replacing: str | None = None) -> bool:
    """Name the open task's new job; with `replacing`, only if its job is still that one (of two
    reapers, or a reaper and the job itself, one wins). Whether it was named."""
    claimed = await db.fetchval(
        """
        UPDATE sync_tasks SET job_id = $2, updated_at = now()
        WHERE id = $1 AND status IN ('queued', 'running') AND ($3::text IS NULL OR coalesce(job_id, id::text) = $3)
        RETURNING true
        """,
        task_id,
        job_id,
        replacing,
    )
    return bool(claimed)


async def requeue_task(db: Executor, task_id: UUID) -> None:
    """A running task whose job could not go on is queued again, for the reaper to give it a job."""
    await db.execute(
        "UPDATE sync_tasks SET status = 'queued', updated_at = now() WHERE id = $1 AND status = 'running'", task_id
    )


async def update_type_progress(
    db: Executor,
    task_id: UUID,
    data_type: str,
    *,
    pages: int = 0,
    records: Mapping[str, int] | None = None,
    done: Mapping[str, int] | None = None,
    **fields: Any,
) -> None:
    """Atomically add pages and per-kind record counts to one data type's progress, mark pages
    `done` (page key -> items, for a rerun to skip), and set any other fields given (status,
    error, pages_total)."""
    kinds = list(records or {})
    await db.execute(
        """
        UPDATE sync_tasks SET updated_at = now(), progress = jsonb_set(progress, ARRAY[$2::text],
            coalesce(progress -> $2, '{}') || $5::jsonb || jsonb_build_object(
                'done', coalesce(progress -> $2 -> 'done', '{}') || $7::jsonb,
                'pages', coalesce((progress -> $2 ->> 'pages')::int, 0) + $3,
                'records', coalesce(progress -> $2 -> 'records', '{}') || (
                    SELECT coalesce(jsonb_object_agg(k, coalesce((progress -> $2 -> 'records' ->> k)::int, 0) + n),
                                    '{}')
                    FROM unnest($4::text[], $6::int[]) AS d(k, n))))
        WHERE id = $1
        """,
        task_id,
        data_type,
        pages,
        kinds,
        {k: readable(v) if isinstance(v, str) else v for k, v in fields.items()},
        [records[k] for k in kinds] if records else [],
        dict(done or {}),
    )


async def restart_type_progress(db: Executor, task_id: UUID, data_type: str) -> None:
    """One data type's pages are read again from the start: no page counts as done, and the pages
    and records it counts are those of the new reading."""
    await db.execute(
        """
        UPDATE sync_tasks SET updated_at = now(), progress = jsonb_set(progress, ARRAY[$2::text],
            coalesce(progress -> $2, '{}') || '{"done": {}, "pages": 0, "records": {}}'::jsonb)
        WHERE id = $1
        """,
        task_id,
        data_type,
    )


async def finish_task(
    db: Executor, task_id: UUID, status: TaskStatus, result: Mapping[str, bool] | None, error: str | None
) -> None:
    """End the task, with its event (sync.<status>) unless it had ended already."""
    await db.execute(
        events.reporting(
            "UPDATE sync_tasks t SET status = $2::task_status, result = $3, error = $4, finished_at = now(),"
            " updated_at = now() FROM (SELECT id, status AS was FROM sync_tasks WHERE id = $1 FOR UPDATE) o"
            f" WHERE t.id = o.id {events.TASK_ENDED_RETURNING}",
            events.TASK_ENDED,
        ),
        task_id,
        status.value,
        dict(result) if result is not None else None,
        readable(error),
    )


# (created_at, id) of the last task of the previous page.
TaskPosition = tuple[datetime, UUID]


async def user_tasks_page(
    db: Executor, user_id: UUID, status: str | None, provider: str | None, before: TaskPosition | None, limit: int
) -> list[asyncpg.Record]:
    """A user's (by its key) tasks as the API shows them, newest first, older than `before`."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"""
        SELECT {_TASK_API_COLUMNS} FROM sync_tasks t JOIN users u ON u.id = t.user_id
        WHERE t.user_id = $1 AND ($2::task_status IS NULL OR t.status = $2::task_status)
          AND ($3::text IS NULL OR t.provider = $3)
          AND ($4::timestamptz IS NULL OR (t.created_at, t.id) < ($4, $5::uuid))
        ORDER BY t.created_at DESC, t.id DESC LIMIT $6
        """,
        user_id,
        status,
        provider,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return rows


CANCELLED = "Cancelled through the API before it started"


async def cancel_queued_task(db: Executor, task_id: UUID, app_id: UUID) -> str | None:
    """Fail the application's task if it is still queued (its job, when it comes, finds it final and
    does nothing), with its sync.failed event; the task's status before (None: no such task). A
    running task is left alone: its worker holds it, and ends it itself."""
    row = await db.fetchrow(
        events.reporting(
            "UPDATE sync_tasks t SET status = 'failed', error = $3, finished_at = now(), updated_at = now(),"
            " result = (SELECT jsonb_object_agg(d, false) FROM unnest(t.data_types) AS d)"
            " FROM (SELECT id, status AS was FROM sync_tasks WHERE id = $1 AND application_id = $2 FOR UPDATE) o"
            f" WHERE t.id = o.id AND o.was = 'queued' {events.TASK_ENDED_RETURNING}",
            events.TASK_ENDED,
            answer="SELECT (SELECT count(*) FROM changed) AS cancelled",
        ),
        task_id,
        app_id,
        CANCELLED,
    )
    if row is not None and row["cancelled"]:
        return "queued"
    status: str | None = await db.fetchval(
        "SELECT status::text FROM sync_tasks WHERE id = $1 AND application_id = $2", task_id, app_id
    )
    return status
