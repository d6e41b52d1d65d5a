"""Bulk upserts of normalized rows: one `INSERT ... SELECT FROM unnest(...) ON CONFLICT` per table.

A row whose raw upstream JSON is unchanged is left alone, so a re-sync rewrites nothing.
"""

import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from wearsync.records import DailyActivity, Record, Recovery, Sample, SleepSession, Workout

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


def _upsert_sql(table: str, columns: dict[str, str], key: tuple[str, ...], touch: bool = True) -> str:
    names = ", ".join(columns)
    # `raw` goes in as JSON text, serialized once per upstream entry (several samples share one).
    arrays = ", ".join(
        f"${i}::{'text' if pg_type == 'jsonb' else pg_type}[]" for i, pg_type in enumerate(columns.values(), start=3)
    )
    selected = ", ".join(f"u.{c}::jsonb" if pg_type == "jsonb" else f"u.{c}" for c, pg_type in columns.items())
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    if touch:
        updates += ", updated_at = now()"
    return (
        f"INSERT INTO {table} AS t (user_id, provider, {names})"
        f" SELECT $1, $2, {selected} FROM unnest({arrays}) AS u({names})"
        f" ON CONFLICT (user_id, provider, {', '.join(key)}) DO UPDATE SET {updates}"
        f" WHERE t.raw IS DISTINCT FROM EXCLUDED.raw"
    )


# record type -> (statement, columns, the fields that identify a record)
_TABLES: dict[type, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    record_type: (_upsert_sql(table, cols, key, touch=table != "samples"), tuple(cols), key)
    for record_type, table, cols, key in (
        (Workout, "workouts", _WORKOUT, ("provider_record_id",)),
        (SleepSession, "sleep_sessions", _SLEEP, ("provider_record_id",)),
        (Recovery, "recoveries", _RECOVERY, ("provider_record_id",)),
        (DailyActivity, "daily_activity", _DAILY, ("provider_record_id",)),
        (Sample, "samples", _SAMPLE, ("sample_type", "recorded_at")),
    )
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
    conn: asyncpg.Connection | PoolConnectionProxy, user_id: UUID, provider: str, records: Sequence[Record]
) -> None:
    for record_type, rows in _group(records).items():
        sql, columns, _ = _TABLES[record_type]
        arrays = [_raw_texts(rows) if c == "raw" else [getattr(row, c) for row in rows] for c in columns]
        await conn.execute(sql, user_id, provider, *arrays)


def _raw_texts(rows: Sequence[Record]) -> list[str]:
    """Each row's raw JSON as text, serialized once per distinct upstream object."""
    texts: dict[int, str] = {}
    out = []
    for row in rows:
        raw = row.raw
        text = texts.get(id(raw))
        if text is None:
            text = texts[id(raw)] = json.dumps(raw, separators=(",", ":"))
        out.append(text)
    return out
