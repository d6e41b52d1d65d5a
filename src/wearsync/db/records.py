"""Bulk upserts of normalized rows: one `INSERT ... SELECT FROM unnest(...) ON CONFLICT` per table.

A row whose raw upstream JSON is unchanged is left alone, so a re-sync rewrites nothing. Records
that must not replace what is stored (a provider's notification that its record was created:
what is stored is as new, or newer) are inserted only where none is stored.
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from wearsync.db import Executor, events
from wearsync.records import RECORD_KIND, DailyActivity, Record, Recovery, Sample, SleepSession, Workout
from wearsync.storable import COLUMNS, KEYS, json_text


def _upsert_sql(table: str, kind: str, columns: dict[str, str], key: tuple[str, ...], overwrite: bool = True) -> str:
    """The upsert of one table's rows (`overwrite=False`: the insert of the rows not stored yet),
    with the events of the rows it inserted or changed, answering how many: $1 the user's key, $2
    the provider, then one array per column, then the task id (or NULL)."""
    names = ", ".join(columns)
    # `raw` goes in as JSON text, serialized once per upstream entry (several samples share one).
    arrays = ", ".join(
        f"${i}::{'text' if pg_type == 'jsonb' else pg_type}[]" for i, pg_type in enumerate(columns.values(), start=3)
    )
    selected = ", ".join(f"u.{c}::jsonb" if pg_type == "jsonb" else f"u.{c}" for c, pg_type in columns.items())
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    samples = kind == "samples"
    if not samples:
        updates += ", updated_at = now()"
    task = f"${len(columns) + 3}"
    identity = "t.sample_type, t.recorded_at" if samples else "t.id, t.provider_record_id"
    on_conflict = f"DO UPDATE SET {updates} WHERE t.raw IS DISTINCT FROM EXCLUDED.raw" if overwrite else "DO NOTHING"
    change = (
        f"INSERT INTO {table} AS t (user_id, provider, {names})"
        f" SELECT $1, $2, {selected} FROM unnest({arrays}) AS u({names})"
        f" ON CONFLICT (user_id, provider, {', '.join(key)}) {on_conflict}"
        # xmax is 0 in a row version the statement inserted, its own id where it updated one.
        f" RETURNING {identity}, t.xmax = 0 AS created"
    )
    written = events.samples_written(task) if samples else events.records_written(kind, task)
    return events.reporting(change, written)


_SCHEMA = (
    (Workout, "workouts"),
    (SleepSession, "sleep_sessions"),
    (Recovery, "recoveries"),
    (DailyActivity, "daily_activity"),
    (Sample, "samples"),
)
# record type -> ((upsert, insert of new rows only), columns, the fields that identify a record)
_TABLES: dict[type, tuple[tuple[str, str], tuple[str, ...], tuple[str, ...]]] = {
    record_type: (
        (
            _upsert_sql(table, RECORD_KIND[record_type], COLUMNS[record_type], KEYS[record_type]),
            _upsert_sql(table, RECORD_KIND[record_type], COLUMNS[record_type], KEYS[record_type], overwrite=False),
        ),
        tuple(COLUMNS[record_type]),
        KEYS[record_type],
    )
    for record_type, table in _SCHEMA
}


def _group(records: Sequence[Record]) -> dict[type, list[Record]]:
    """Records by type, each key once (the last wins): one statement may not update a row twice."""
    groups: dict[type, dict[tuple[Any, ...], Record]] = {}
    for record in records:
        key_fields = _TABLES[type(record)][2]
        key = tuple(getattr(record, f) for f in key_fields)
        groups.setdefault(type(record), {})[key] = record
    return {t: list(by_key.values()) for t, by_key in groups.items()}


async def upsert_records(
    conn: asyncpg.Connection | PoolConnectionProxy,
    user_id: UUID,
    provider: str,
    records: Sequence[Record],
    task_id: UUID | None = None,
    overwrite: bool = True,
) -> int:
    """Store the records, with an event per kind for the rows inserted (data.created) and those
    changed (data.updated), naming `task_id`, the sync that wrote them (None: a webhook's data);
    the rows inserted or changed. `overwrite=False`: a row stored already is left as it is."""
    written = 0
    for record_type, rows in _group(records).items():
        (upsert, insert), columns, _ = _TABLES[record_type]
        arrays = [_raw_texts(rows) if c == "raw" else [getattr(row, c) for row in rows] for c in columns]
        written += await conn.fetchval(upsert if overwrite else insert, user_id, provider, *arrays, task_id)
    return written


_DELETED_FROM = {"workouts": "workouts", "sleep": "sleep_sessions", "recovery": "recoveries"}


async def delete_records(db: Executor, user_id: UUID, provider: str, kind: str, condition: str, *args: Any) -> int:
    """Delete the user's rows of a kind (workouts, sleep, recovery) from a provider that match
    `condition` (on the row `r`; its parameters from $3), with their data.deleted event; how many."""
    change = (
        f"DELETE FROM {_DELETED_FROM[kind]} r WHERE r.user_id = $1 AND r.provider = $2 AND ({condition})"
        " RETURNING r.id, r.provider_record_id"
    )
    deleted: int = await db.fetchval(events.reporting(change, events.records_deleted(kind)), user_id, provider, *args)
    return deleted


async def stored_raw(db: Executor, user_id: UUID, provider: str, kind: str, record_id: str) -> dict[str, Any] | None:
    """The raw JSON of the user's row of a kind (workouts, sleep, recovery) from a provider."""
    raw: dict[str, Any] | None = await db.fetchval(
        f"SELECT raw FROM {_DELETED_FROM[kind]} WHERE user_id = $1 AND provider = $2 AND provider_record_id = $3",
        user_id, provider, record_id,
    )  # fmt: skip
    return raw


def _raw_texts(rows: Sequence[Record]) -> list[str]:
    """Each row's raw JSON as text, serialized once per distinct upstream object."""
    texts: dict[int, str] = {}
    out = []
    for row in rows:
        raw = row.raw
        text = texts.get(id(raw))
        if text is None:
            text = texts[id(raw)] = json_text(raw)
        out.append(text)
    return out
