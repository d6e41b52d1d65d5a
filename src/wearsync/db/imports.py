"""SQL of file imports (an Apple Health export): their tasks, and their rows, written batch by
batch with COPY into temporary tables and then one INSERT ... ON CONFLICT per table, all in the one
transaction of the import, so that an import that fails stores nothing."""

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from wearsync.db import Executor, events
from wearsync.db.tasks import TooManyOpenTasks, initial_progress
from wearsync.records import RECORD_KIND, DailyActivity, SleepSession, Workout
from wearsync.storable import json_text

IMPORT_TYPE = "import"  # an import task's one data type: its key in progress and result

Connection = asyncpg.Connection | PoolConnectionProxy


async def create_import_task(
    db: Executor, *, task_id: UUID, app_id: UUID, user_id: UUID, source: str, max_open_per_user: int,
    max_open_per_app: int,
) -> tuple[UUID, bool]:  # fmt: skip
    """A queued import task for the user: (its id, True); or (the id of the user's import from this
    source that is queued or running, False): one at a time, held by the unique index of open
    tasks. TooManyOpenTasks past the caps on open tasks, as for syncs."""
    row = await db.fetchrow(
        """
        WITH open AS (
            SELECT
                (SELECT count(*) FROM sync_tasks WHERE user_id = $3 AND status IN ('queued', 'running'))
                    < $7 AS user_ok,
                (SELECT count(*) FROM sync_tasks WHERE application_id = $2 AND status IN ('queued', 'running'))
                    < $8 AS app_ok
        ), created AS (
            INSERT INTO sync_tasks (id, application_id, user_id, provider, mode, data_types, params, progress)
            SELECT $1, $2, $3, $4, 'async', $5, '{}', $6 FROM open WHERE user_ok AND app_ok
            ON CONFLICT (user_id, provider, data_types, params) WHERE status IN ('queued', 'running') DO NOTHING
            RETURNING id
        )
        SELECT (SELECT id FROM created) AS id, open.* FROM open
        """,
        task_id, app_id, user_id, source, [IMPORT_TYPE], initial_progress([IMPORT_TYPE]), max_open_per_user,
        max_open_per_app,
    )  # fmt: skip
    assert row is not None
    if row["id"] is not None:
        return row["id"], True
    existing = await open_import(db, user_id, source)
    if existing is not None:
        return existing, False
    if not row["user_ok"]:
        raise TooManyOpenTasks("user", max_open_per_user)
    raise TooManyOpenTasks("application", max_open_per_app)


async def open_import(db: Executor, user_id: UUID, source: str) -> UUID | None:
    """The user's import from this source that is queued or running, if any."""
    task_id: UUID | None = await db.fetchval(
        "SELECT id FROM sync_tasks WHERE user_id = $1 AND provider = $2 AND data_types = $3"
        " AND status IN ('queued', 'running')",
        user_id,
        source,
        [IMPORT_TYPE],
    )
    return task_id


async def open_import_ids(db: Executor, task_ids: Sequence[UUID]) -> set[UUID]:
    """Those of these tasks that are still queued or running."""
    rows = await db.fetch(
        "SELECT id FROM sync_tasks WHERE id = ANY($1::uuid[]) AND status IN ('queued', 'running')", list(task_ids)
    )
    return {r["id"] for r in rows}


# ---- the rows --------------------------------------------------------------------------------

_TABLES: dict[type, tuple[str, tuple[str, ...]]] = {
    record_type: (table, tuple(f.name for f in fields(record_type)))
    for record_type, table in (
        (Workout, "workouts"),
        (SleepSession, "sleep_sessions"),
        (DailyActivity, "daily_activity"),
    )
}
_SAMPLE_COLUMNS = ("sample_type", "recorded_at", "value", "raw")


def _staging(table: str, columns: Sequence[str]) -> str:
    """Its table's columns, with raw as text (the pool reads jsonb as text: COPY's binary format has
    no jsonb encoder then) and a sequence number."""
    selected = ", ".join("raw::text AS raw" if c == "raw" else c for c in columns)
    return (
        f"CREATE TEMP TABLE import_{table} ON COMMIT DROP AS"
        f" SELECT {selected}, 0::bigint AS seq FROM {table} WITH NO DATA"
    )


def _upsert(table: str, kind: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """From the staging table into the table: each key once (the last read wins), a row whose
    raw is unchanged left alone (a re-import rewrites nothing); with the data.created and
    data.updated events of what it wrote, as a sync's pages have ($3: the task)."""
    names, keys = ", ".join(columns), ", ".join(key)
    selected = ", ".join("raw::jsonb" if c == "raw" else c for c in columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    samples = kind == "samples"
    change = (
        f"INSERT INTO {table} AS t (user_id, provider, {names})"
        f" SELECT DISTINCT ON ({keys}) $1::uuid, $2::text, {selected} FROM import_{table} ORDER BY {keys}, seq DESC"
        f" ON CONFLICT (user_id, provider, {keys}) DO UPDATE SET {updates}{'' if samples else ', updated_at = now()'}"
        " WHERE t.raw IS DISTINCT FROM EXCLUDED.raw"
        # xmax is 0 in a row version the statement inserted, its own id where it updated one.
        f" RETURNING {'t.sample_type, t.recorded_at' if samples else 't.id, t.provider_record_id'},"
        " t.xmax = 0 AS created"
    )
    return events.reporting(change, events.samples_written("$3") if samples else events.records_written(kind, "$3"))


_STAGING = [_staging(t, cols) for t, cols in _TABLES.values()] + [_staging("samples", _SAMPLE_COLUMNS)]
_UPSERTS = {t: _upsert(t, RECORD_KIND[r], cols, ("provider_record_id",)) for r, (t, cols) in _TABLES.items()} | {
    "samples": _upsert("samples", "samples", _SAMPLE_COLUMNS, ("sample_type", "recorded_at"))
}


async def create_staging(conn: Connection) -> None:
    """The import's staging tables, dropped with its transaction."""
    for statement in _STAGING:
        await conn.execute(statement)


async def write_batch(
    conn: Connection,
    user_id: UUID,
    source: str,
    task_id: UUID,
    samples: Sequence[tuple[str, datetime, float, str, int]],
    records: Sequence[Workout | SleepSession | DailyActivity],
) -> None:
    """One batch into the tables, inside the import's transaction. Samples are (sample_type,
    recorded_at, value, raw JSON, sequence); a sequence orders the repeats of one key."""
    if samples:
        await _copy_in(conn, (user_id, source, task_id), "samples", (*_SAMPLE_COLUMNS, "seq"), samples)
    by_type: dict[type, list[tuple[Any, ...]]] = {}
    for seq, record in enumerate(records):
        columns = _TABLES[type(record)][1]
        values = [json_text(record.raw) if c == "raw" else getattr(record, c) for c in columns]
        by_type.setdefault(type(record), []).append((*values, seq))
    for record_type, rows in by_type.items():
        table, columns = _TABLES[record_type]
        await _copy_in(conn, (user_id, source, task_id), table, (*columns, "seq"), rows)


async def _copy_in(
    conn: Connection, args: tuple[UUID, str, UUID], table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """COPY into the staging table, then the upsert: args are the user's key, the source, the task."""
    await conn.copy_records_to_table(f"import_{table}", records=rows, columns=columns)
    await conn.execute(_UPSERTS[table], *args)
    await conn.execute(f"TRUNCATE import_{table}")
