"""Pages of one user's stored data, for the read API: one keyset query per kind of data.

A list is ordered by (time, tiebreak) ascending. The time is a workout's or sleep's start, a
recovery's or sample's instant, or a day; the tiebreak is the row id, or for samples the provider
(a sample is unique per user, provider, type and instant). A page holds the rows strictly after a
position (the last row of the previous page), so rows that share a time are neither repeated nor
skipped, and `end` keeps the time below it: [start, end) is a lower bound (start, lowest
tiebreak) and an upper bound on the time.

Every page is an index range scan that stops after `limit` rows: records through their
(user_id, time, id) index (migration 0010), the provider filter being a filter on that scan (a
user has thousands of these rows, not millions); samples, the millions, through their primary key
(user_id, provider, sample_type, recorded_at), one range per provider, merged in order.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar
from uuid import UUID

import asyncpg

from wearsync.db import Executor
from wearsync.settings import DATA_SOURCES

# A list's position: the last row's (time, tiebreak).
RecordPosition = tuple[datetime | date, int]
SamplePosition = tuple[datetime, str]


@dataclass(frozen=True)
class Window:
    """Which of a user's rows a page reads: times in [start, end), one provider's or all."""

    user_id: UUID
    start: datetime | None = None
    end: datetime | None = None
    provider: str | None = None
    include_raw: bool = False


@dataclass(frozen=True)
class Kind:
    table: str
    time: str  # the column a list is ordered and filtered by
    columns: str  # what a row shows (raw only on request)

    @property
    def is_day(self) -> bool:
        return self.time == "day"


_TRACKED = "created_at, updated_at"
WORKOUTS = Kind(
    "workouts",
    "start_time",
    "id, provider, provider_record_id, sport, provider_sport, name, start_time, end_time, utc_offset_minutes,"
    " duration_s, distance_m, energy_kcal, steps, avg_hr, max_hr, min_hr, avg_speed_mps, max_speed_mps,"
    " ascent_m, descent_m, max_altitude_m, min_altitude_m, avg_power_w, max_power_w, avg_cadence, max_cadence,"
    f" device_name, {_TRACKED}",
)
SLEEP = Kind(
    "sleep_sessions",
    "start_time",
    "id, provider, provider_record_id, start_time, end_time, utc_offset_minutes, is_nap, duration_s, deep_s,"
    f" light_s, rem_s, awake_s, score, avg_hr, min_hr, avg_hrv_ms, respiratory_rate, spo2_percent, {_TRACKED}",
)
RECOVERY = Kind(
    "recoveries",
    "recorded_at",
    "id, provider, provider_record_id, recorded_at, utc_offset_minutes, score, resting_hr, hrv_rmssd_ms,"
    f" spo2_percent, skin_temp_c, stress_state, {_TRACKED}",
)
DAILY = Kind(
    "daily_activity",
    "day",
    f"id, provider, provider_record_id, day, steps, energy_kcal, active_energy_kcal, distance_m, {_TRACKED}",
)


def _records_sql(kind: Kind) -> str:
    pg_type = "date" if kind.is_day else "timestamptz"
    return f"""
        SELECT {kind.columns}, CASE WHEN $6 THEN raw END AS raw
        FROM {kind.table}
        WHERE user_id = $1
          AND ({kind.time}, id) > (coalesce($2::{pg_type}, '-infinity'), coalesce($3::bigint, 0))
          AND {kind.time} < coalesce($4::{pg_type}, 'infinity')
          AND ($5::text IS NULL OR provider = $5)
        ORDER BY {kind.time}, id
        LIMIT $7
    """


RECORDS_SQL = {kind: _records_sql(kind) for kind in (WORKOUTS, SLEEP, RECOVERY, DAILY)}


def first_day_from(at: datetime) -> date:
    """The first day whose midnight (UTC) is at or after `at`: days of [start, end) are the days of
    [first_day_from(start), first_day_from(end))."""
    at = at.astimezone(UTC)
    return at.date() if at.time() == time(0) else at.date() + timedelta(days=1)


def bounds(kind: Kind, window: Window) -> tuple[datetime | date | None, datetime | date | None]:
    """The window's [start, end) in the kind's time: the instants, or the days whose midnight is within."""
    if kind.is_day:
        return window.start and first_day_from(window.start), window.end and first_day_from(window.end)
    return window.start, window.end


P = TypeVar("P", RecordPosition, SamplePosition)


def _start_after(floor: P | None, after: P | None) -> P | None:
    """Where a page starts: after the cursor's position or just before `start`, whichever is later."""
    if floor is None or after is None:
        return floor or after
    return max(floor, after)


async def read_records(
    db: Executor, kind: Kind, window: Window, after: RecordPosition | None, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` rows of the kind after the position, in (time, id) order."""
    start, end = bounds(kind, window)
    # ids start at 1: after (start, 0) is every row of time >= start.
    time_after, id_after = _start_after(None if start is None else (start, 0), after) or (None, None)
    rows: list[asyncpg.Record] = await db.fetch(
        RECORDS_SQL[kind], window.user_id, time_after, id_after, end, window.provider, window.include_raw, limit
    )
    return rows


def _samples_branch(provider: str) -> str:
    """One provider's samples after the position: a range of the primary key. Its provider being
    fixed, (recorded_at, provider) > ($3, $4) is recorded_at > $3, or = $3 when it sorts after $4."""
    assert provider.replace("_", "").isalpha()  # a name from DATA_SOURCES, written into the SQL
    p = f"'{provider}'"
    return f"""(
        SELECT provider, sample_type AS type, recorded_at, value, CASE WHEN $7 THEN raw END AS raw
        FROM samples
        WHERE user_id = $1 AND provider = {p} AND sample_type = $2 AND coalesce($6::text, {p}) = {p}
          AND recorded_at >= coalesce($3::timestamptz, '-infinity')
          AND (recorded_at > coalesce($3::timestamptz, '-infinity') OR {p} > coalesce($4::text, ''))
          AND recorded_at < coalesce($5::timestamptz, 'infinity')
        ORDER BY recorded_at
        LIMIT $8
    )"""


# Every provider's branch; a provider filter turns the others off (a one-time filter, no scan).
SAMPLES_SQL = f"""
    SELECT * FROM ({" UNION ALL ".join(_samples_branch(p) for p in DATA_SOURCES)}) AS page
    ORDER BY recorded_at, provider
    LIMIT $8
"""


async def read_samples(
    db: Executor, sample_type: str, window: Window, after: SamplePosition | None, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` samples of the type after the position, in (recorded_at, provider) order."""
    # Provider names are not empty: after (start, '') is every sample at or after start.
    floor = None if window.start is None else (window.start, "")
    time_after, provider_after = _start_after(floor, after) or (None, None)
    rows: list[asyncpg.Record] = await db.fetch(
        SAMPLES_SQL,
        window.user_id,
        sample_type,
        time_after,
        provider_after,
        window.end,
        window.provider,
        window.include_raw,
        limit,
    )
    return rows
