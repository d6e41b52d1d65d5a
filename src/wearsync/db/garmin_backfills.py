"""Garmin's backfill requests of a sync task, and the tasks waiting for their deliveries."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from wearsync.db import Executor, events, readable
from wearsync.models import TaskStatus


async def insert_garmin_backfill(
    db: Executor,
    task_id: UUID,
    user_id: UUID,
    summary_type: str,
    start: datetime,
    end: datetime,
    status: str,
) -> None:
    """Record one backfill request of a sync task; a rerun asking again keeps the first record."""
    await db.execute(
        """
        INSERT INTO garmin_backfills (task_id, user_id, summary_type, start_time, end_time, status)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (task_id, summary_type, start_time) DO NOTHING
        """,
        task_id,
        user_id,
        summary_type,
        start,
        end,
        status,
    )


async def mark_garmin_backfills_delivered(
    db: Executor, user_id: UUID, summary_type: str, starts: Sequence[datetime]
) -> int:
    """Count delivered summaries (by start time) on every backfill window of the user and type
    that holds them; how many windows were touched."""
    status: str = await db.execute(
        """
        UPDATE garmin_backfills b
        SET delivered_records = b.delivered_records + d.n, last_delivery_at = now()
        FROM (SELECT w.task_id, w.start_time, count(*)::int AS n
              FROM garmin_backfills w JOIN unnest($3::timestamptz[]) AS s(at)
                ON s.at >= w.start_time AND s.at < w.end_time
              WHERE w.user_id = $1 AND w.summary_type = $2
              GROUP BY w.task_id, w.start_time) d
        WHERE b.task_id = d.task_id AND b.summary_type = $2 AND b.start_time = d.start_time
        """,
        user_id,
        summary_type,
        list(starts),
    )
    return int(status.split()[-1])


async def await_deliveries(db: Executor, task_id: UUID, wait_s: float, awaiting: Sequence[str]) -> None:
    """The running task's job is done but its data comes later by webhook: its data types
    `awaiting` say so, and it stays running until its deliveries arrived or `wait_s` passed (from
    the first time it got here: a rerun of the job keeps that time)."""
    await db.execute(
        """
        UPDATE sync_tasks SET updated_at = now(),
            deliveries_due_at = coalesce(deliveries_due_at, now() + make_interval(secs => $2)),
            progress = progress || (
                SELECT coalesce(jsonb_object_agg(t, progress -> t || '{"status": "awaiting_delivery"}'), '{}')
                FROM unnest($3::text[]) AS t)
        WHERE id = $1 AND status = 'running'
        """,
        task_id,
        float(wait_s),
        list(awaiting),
    )


def _stored_between(table: str, start: str, condition: str = "") -> str:
    return (
        f"EXISTS (SELECT 1 FROM {table} r WHERE r.user_id = b.user_id AND r.provider = 'garmin'{condition}"
        f" AND {start} >= b.start_time AND {start} < b.end_time)"
    )


_RAW_START = "to_timestamp((r.raw ->> 'startTimeInSeconds')::bigint)"


# A backfill window `b` has what Garmin would deliver into it once something was delivered into it
# since it was asked for, or we already hold a Garmin row starting in it: Garmin sends a window
# asked for again as it sent it before, and such a delivery, the same as the one stored, is
# dropped as a duplicate when it arrives.
_WINDOW_HELD = f"""(b.delivered_records > 0 OR CASE b.summary_type
    WHEN 'activities' THEN {_stored_between("workouts", "r.start_time")}
    WHEN 'sleeps' THEN {_stored_between("sleep_sessions", "r.start_time")}
    WHEN 'hrv' THEN {_stored_between("recoveries", _RAW_START)}
    WHEN 'dailies' THEN {_stored_between("daily_activity", _RAW_START)}
    WHEN 'epochs' THEN {_stored_between("samples", "r.recorded_at", " AND r.sample_type IN ('steps', 'energy')")}
    ELSE false END)"""


async def garmin_tasks_awaiting_deliveries(db: Executor, user_id: UUID | None = None) -> list[asyncpg.Record]:
    """The running tasks waiting for Garmin's deliveries (of one user, or all): (id, data_types,
    progress, overdue, missing: the windows nothing was delivered into yet, as JSON objects)."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"""
        SELECT t.id, t.data_types, t.progress, t.deliveries_due_at <= now() AS overdue,
               coalesce(jsonb_agg(jsonb_build_object(
                   'type', b.summary_type, 'start', extract(epoch FROM b.start_time)::bigint,
                   'end', extract(epoch FROM b.end_time)::bigint) ORDER BY b.summary_type, b.start_time)
                   FILTER (WHERE b.task_id IS NOT NULL AND NOT {_WINDOW_HELD}), '[]') AS missing
        FROM sync_tasks t LEFT JOIN garmin_backfills b ON b.task_id = t.id
        WHERE t.status = 'running' AND t.deliveries_due_at IS NOT NULL AND t.provider = 'garmin'
          AND ($1::uuid IS NULL OR t.user_id = $1)
        GROUP BY t.id
        ORDER BY t.deliveries_due_at
        """,
        user_id,
    )
    return rows


async def finish_awaiting_task(
    db: Executor, task_id: UUID, status: TaskStatus, result: Mapping[str, bool], error: str | None,
    progress: Mapping[str, Any],
) -> bool:  # fmt: skip
    """Finish a task that waited for deliveries, unless another settler (or a rerun) did first;
    with its events (sync.<status>, backfill.completed)."""
    done: int = await db.fetchval(
        events.reporting(
            f"""
            UPDATE sync_tasks t SET status = $2::task_status, result = $3, error = $4, progress = $5,
                finished_at = now(), updated_at = now()
            FROM (SELECT id, status AS was FROM sync_tasks WHERE id = $1 FOR UPDATE) o
            WHERE t.id = o.id AND o.was = 'running' AND t.deliveries_due_at IS NOT NULL
            {events.TASK_ENDED_RETURNING}
            """,
            events.BACKFILL_ENDED,
        ),
        task_id,
        status.value,
        dict(result),
        readable(error),
        dict(progress),
    )
    return done == 1


async def garmin_backfill_summary(db: Executor, task_id: UUID) -> dict[str, Any]:
    """What a sync task asked Garmin for and what has been delivered of it since: windows
    requested, windows with at least one summary delivered, windows still awaited and until when
    (while the task waits for them), and each window (Unix seconds)."""
    due = await db.fetchval("SELECT deliveries_due_at FROM sync_tasks WHERE id = $1 AND status = 'running'", task_id)
    rows = await db.fetch(
        f"""
        SELECT summary_type, extract(epoch FROM start_time)::bigint AS start,
               extract(epoch FROM end_time)::bigint AS "end", status, delivered_records, last_delivery_at,
               {_WINDOW_HELD} AS held
        FROM garmin_backfills b WHERE task_id = $1 ORDER BY summary_type, start_time
        """,
        task_id,
    )
    windows = [
        {"type": r["summary_type"], "start": r["start"], "end": r["end"], "status": r["status"],
         "delivered_records": r["delivered_records"], "last_delivery_at": r["last_delivery_at"]}
        for r in rows
    ]  # fmt: skip
    delivered = sum(1 for w in windows if w["delivered_records"] > 0)
    return {
        "requested": len(windows),
        "delivered": delivered,
        "awaiting": sum(1 for r in rows if not r["held"]) if due is not None else 0,
        "deliveries_due_at": due,
        "windows": windows,
    }
