"""Bulk upserts of normalized rows: one `INSERT ... SELECT FROM unnest(...) ON CONFLICT` per table.

A row whose raw upstream JSON is unchanged is left alone, so a re-sync rewrites nothing. Records
that must not replace what is stored (a provider's notification that its record was created:
what is stored is as new, or newer) are inserted only where none is stored.
"""

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import date, datetime
from types import NoneType
from typing import Any, get_args
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from wearsync.db import Executor, events
from wearsync.records import RECORD_KIND, DailyActivity, Record, Recovery, Sample, SleepSession, Workout

_COMMON = {"provider_record_id": "text"}
_WORKOUT = _COMMON | {
    "sport": "text",
    "provider_sport": "text",
    "name": "text",
    "start_time": "timestamptz",
    "end_time": "timestamptz",
    "utc_offset_minutes": "int",
    "duration_s": "float8",
    "distance_m": "float8",
    "energy_kcal": "float8",
    "steps": "int",
    "avg_hr": "float8",
    "max_hr": "float8",
    "min_hr": "float8",
    "avg_speed_mps": "float8",
    "max_speed_mps": "float8",
    "ascent_m": "float8",
    "descent_m": "float8",
    "max_altitude_m": "float8",
    "min_altitude_m": "float8",
    "avg_power_w": "float8",
    "max_power_w": "float8",
    "avg_cadence": "float8",
    "max_cadence": "float8",
    "device_name": "text",
    "raw": "jsonb",
}
_SLEEP = _COMMON | {
    "start_time": "timestamptz",
    "end_time": "timestamptz",
    "utc_offset_minutes": "int",
    "is_nap": "bool",
    "duration_s": "float8",
    "deep_s": "float8",
    "light_s": "float8",
    "rem_s": "float8",
    "awake_s": "float8",
    "score": "float8",
    "avg_hr": "float8",
    "min_hr": "float8",
    "avg_hrv_ms": "float8",
    "respiratory_rate": "float8",
    "spo2_percent": "float8",
    "raw": "jsonb",
}
_RECOVERY = _COMMON | {
    "recorded_at": "timestamptz",
    "utc_offset_minutes": "int",
    "score": "float8",
    "resting_hr": "float8",
    "hrv_rmssd_ms": "float8",
    "spo2_percent": "float8",
    "skin_temp_c": "float8",
    "stress_state": "text",
    "raw": "jsonb",
}
_DAILY = _COMMON | {
    "day": "date",
    "steps": "int",
    "energy_kcal": "float8",
    "active_energy_kcal": "float8",
    "distance_m": "float8",
    "raw": "jsonb",
}
_SAMPLE = {"sample_type": "text", "recorded_at": "timestamptz", "value": "float8", "raw": "jsonb"}


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
    (Workout, "workouts", _WORKOUT, ("provider_record_id",)),
    (SleepSession, "sleep_sessions", _SLEEP, ("provider_record_id",)),
    (Recovery, "recoveries", _RECOVERY, ("provider_record_id",)),
    (DailyActivity, "daily_activity", _DAILY, ("provider_record_id",)),
    (Sample, "samples", _SAMPLE, ("sample_type", "recorded_at")),
)
# record type -> ((upsert, insert of new rows only), columns, the fields that identify a record)
_TABLES: dict[type, tuple[tuple[str, str], tuple[str, ...], tuple[str, ...]]] = {
    record_type: (
        (
            _upsert_sql(table, RECORD_KIND[record_type], cols, key),
            _upsert_sql(table, RECORD_KIND[record_type], cols, key, overwrite=False),
        ),
        tuple(cols),
        key,
    )
    for record_type, table, cols, key in _SCHEMA
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


# ---- what PostgreSQL accepts ----------------------------------------------------------------

MAX_KEY_CHARS = 255  # a provider's record id: far longer than any provider's, well within an index entry


def check_text(value: Any) -> str:
    """`value` if PostgreSQL stores it as text: a string without NUL characters or lone surrogates
    (which UTF-8 cannot encode); ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueError("text with a NUL character")
    if not _utf8(value):
        raise ValueError("text with a lone surrogate")
    return value


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate, which JSON escapes can make
        return False
    return True


def json_text(value: Any) -> str:
    """`value` as JSON text PostgreSQL's jsonb accepts; ValueError for NaN or infinite numbers,
    NUL characters (`\\u0000`) and lone surrogates, which jsonb refuses."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if not _utf8(text):
        raise ValueError("JSON with a lone surrogate")
    # Every backslash in the text starts an escape; with the escaped backslashes gone, any
    # `\u0000` left is a NUL character.
    if "\\u0000" in text.replace("\\\\", ""):
        raise ValueError("JSON with a NUL character")
    return text


def _key_text(value: Any) -> None:
    if len(check_text(value)) > MAX_KEY_CHARS:
        raise ValueError(f"longer than {MAX_KEY_CHARS} characters")


def _int4(value: Any) -> None:
    if not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise ValueError("not an integer within PostgreSQL's integer range")


def _finite(value: Any) -> None:
    if not isinstance(value, int | float) or not -sys.float_info.max <= value <= sys.float_info.max:
        raise ValueError("not a finite number")


def _aware(value: Any) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError("not a timezone-aware datetime")


def _date(value: Any) -> None:
    if not isinstance(value, date):
        raise ValueError("not a date")


def _bool(value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError("not a boolean")


_CHECKS: dict[str, Callable[[Any], object]] = {
    "text": check_text, "int": _int4, "float8": _finite, "timestamptz": _aware, "date": _date, "bool": _bool,
    "jsonb": json_text,
}  # fmt: skip
# record type -> (column, its check, nullable) for each column
_COLUMN_CHECKS: dict[type, list[tuple[str, Callable[[Any], object], bool]]] = {
    record_type: [
        (
            f.name,
            _key_text if f.name in key and cols[f.name] == "text" else _CHECKS[cols[f.name]],
            NoneType in get_args(f.type),
        )
        for f in fields(record_type)
    ]
    for record_type, _, cols, key in _SCHEMA
}


def check_storable(record: Record, *, raw: bool = True) -> None:
    """ValueError naming the field unless every column of the record's row is one PostgreSQL
    stores: text as `check_text` (an id at most MAX_KEY_CHARS long), int within int4, finite
    floats (NaN or infinity is no measurement), aware datetimes, dates, booleans, raw JSON as
    `json_text` (unless `raw` is False: checked already), and None only where the column may be
    null."""
    for column, check, nullable in _COLUMN_CHECKS[type(record)]:
        value = getattr(record, column)
        if value is None:
            if nullable:
                continue
            problem = "missing"
        elif check is json_text and not raw:
            continue
        else:
            try:
                check(value)
                continue
            except ValueError as e:
                problem = str(e)
        raise ValueError(f"{type(record).__name__}.{column}: {problem}: {str(value)[:100]!r}")
