"""The storability guards, table-driven from PostgreSQL's own catalog: every column of every data
table meets the values it cannot hold (NUL and lone surrogates in text, naive datetimes, non-dates,
an int where a bool belongs, None where the column is NOT NULL, numbers past int4, NaN, ids past
the length limit), and each must fail `map_page` as MalformedPayload naming the record's field.
A column added by a migration is covered by construction: it is read from the catalog, and a
column no record field fills fails the test.

The values that must pass (the int4 bounds, an id at the limit, None where nullable) are stored
by PostgreSQL itself, so the guards' limits are checked against the database's, not the code's."""

import math
import uuid
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest

from wearsync.db.records import upsert_records
from wearsync.providers.core import map_page
from wearsync.providers.errors import MalformedPayload
from wearsync.records import DailyActivity, Record, Recovery, Sample, SleepSession, Workout

# Each data table and the record that fills it; the catalog check below finds a table missing here.
TABLES: dict[str, type[Record]] = {
    "workouts": Workout,
    "sleep_sessions": SleepSession,
    "recoveries": Recovery,
    "daily_activity": DailyActivity,
    "samples": Sample,
}
# Filled by upsert_records from its arguments or by PostgreSQL: no record field holds them.
# change_seq and change_xid are stamped by PostgreSQL for the change feed (migration 0022).
NOT_FROM_RECORDS = {"id", "user_id", "provider", "created_at", "updated_at", "change_seq", "change_xid"}
MAX_ID_CHARS = 255  # the documented limit of a provider's record id (README: "Operating it")
INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1

NAIVE = datetime(2024, 5, 1, 6, 30)
AWARE = datetime(2024, 5, 1, 6, 30, tzinfo=UTC)

# PostgreSQL type -> a value it stores, and values a record may not carry in such a column.
VALID: dict[str, Any] = {
    "text": "x", "integer": 7, "double precision": 1.5, "timestamp with time zone": AWARE,
    "date": date(2024, 5, 1), "boolean": True, "jsonb": {"id": 1},
}  # fmt: skip
REFUSED: dict[str, list[Any]] = {
    "text": ["a\x00b", "\ud800", 5, b"x"],
    "integer": [INT4_MAX + 1, INT4_MIN - 1, 1.5, "7", math.nan],
    "double precision": [math.nan, math.inf, -math.inf, "1.5", 10**400],
    "timestamp with time zone": [NAIVE, date(2024, 5, 1), "2024-05-01T06:30:00Z", 1714545000],
    "date": ["2024-05-01", 20240501],
    "boolean": [1, 0, "true"],
    "jsonb": [{"v": math.nan}, {"v": math.inf}, {"v": "a\x00"}, {"a\x00": 1}, {"v": "\ud800"}, ["\udfff"]],
}  # fmt: skip
# Values at the edge that PostgreSQL stores: the guards must let them through.
EDGES: dict[str, list[Any]] = {
    "text": ["", "é" * MAX_ID_CHARS, "\\u0000 as text"],
    "integer": [INT4_MIN, INT4_MAX, 0],
    "double precision": [-1.7976931348623157e308, 5e-324, 0, -0.0, 3],
    "timestamp with time zone": [datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)],
    "date": [date(1, 1, 1), date(9999, 12, 31)],
    "boolean": [False],
    "jsonb": [{"v": "\\u0000"}, {"v": 2**63}, [], {}],
}  # fmt: skip


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    not_null: bool
    in_key: bool  # part of the unique key that names a record (with user_id and provider)


async def catalog(db: asyncpg.Pool, table: str) -> list[Column]:
    rows = await db.fetch(
        """
        SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS pg_type, a.attnotnull AS not_null,
               EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisunique
                       AND a.attnum = ANY (i.indkey) AND (SELECT p.attnum FROM pg_attribute p
                           WHERE p.attrelid = a.attrelid AND p.attname = 'provider') = ANY (i.indkey)) AS in_key
        FROM pg_attribute a
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        table,
    )
    return [Column(**dict(row)) for row in rows]


def valid_record(record_type: type[Record], columns: list[Column]) -> Record:
    """A record with every field set to a value its column's type stores."""
    by_name = {c.name: c for c in columns}
    return record_type(**{f.name: VALID[by_name[f.name].pg_type] for f in fields(record_type)})


def refusal(record: Record) -> str | None:
    """The MalformedPayload message map_page raises for a page of this one record, None if it passes."""
    try:
        map_page([{"upstream": "item"}], lambda item: record)
    except MalformedPayload as e:
        return str(e)
    return None


async def test_every_data_table_is_filled_by_a_record_type(db: asyncpg.Pool) -> None:
    """A new data table (one holding upstream records: user_id and raw) needs its record here."""
    rows = await db.fetch(
        """
        SELECT c.table_name FROM information_schema.columns c
        WHERE c.table_schema = 'public' AND c.column_name = 'raw'
          AND EXISTS (SELECT 1 FROM information_schema.columns u WHERE u.table_schema = 'public'
                      AND u.table_name = c.table_name AND u.column_name = 'user_id')
        """
    )
    assert sorted(r["table_name"] for r in rows) == sorted(TABLES)


@pytest.mark.parametrize("table", sorted(TABLES))
async def test_every_column_refuses_what_postgresql_cannot_hold_naming_the_field(db: asyncpg.Pool, table: str) -> None:
    record_type = TABLES[table]
    columns = await catalog(db, table)
    field_names = {f.name for f in fields(record_type)}
    assert {c.name for c in columns} - NOT_FROM_RECORDS == field_names, "a column no record field fills, or the reverse"
    base = valid_record(record_type, columns)
    assert refusal(base) is None
    missed = []
    for column in (c for c in columns if c.name in field_names):
        bad = list(REFUSED[column.pg_type])
        if column.not_null:
            bad.append(None)
        if column.in_key and column.pg_type == "text":
            bad.append("x" * (MAX_ID_CHARS + 1))
        for value in bad:
            message = refusal(replace(base, **{column.name: value}))
            if message is None or f"{record_type.__name__}.{column.name}: " not in message:
                missed.append(f"{column.name} = {value!r}: {message}")
    assert missed == []


@pytest.mark.parametrize("table", sorted(TABLES))
async def test_values_at_postgresqls_limits_pass_the_guards_and_are_stored(db: asyncpg.Pool, table: str) -> None:
    record_type = TABLES[table]
    columns = await catalog(db, table)
    base = valid_record(record_type, columns)
    field_names = {f.name for f in fields(record_type)}
    records: list[Record] = []
    for column in (c for c in columns if c.name in field_names):
        edges = list(EDGES[column.pg_type])
        if not column.not_null:
            edges.append(None)
        if column.in_key and column.pg_type == "text":
            edges.append("x" * MAX_ID_CHARS)
        for value in edges:
            record = replace(base, **{column.name: value})
            assert refusal(record) is None, f"{column.name} = {value!r}"
            records.append(record)
    user_id = await _user(db)
    async with db.acquire() as conn, conn.transaction():
        for record in records:  # one by one: each value alone, the same key overwritten
            await upsert_records(conn, user_id, "suunto", [record])


async def _user(db: asyncpg.Pool) -> uuid.UUID:
    """A user the stored rows can belong to (made in SQL: the API is not under test here)."""
    application = await db.fetchval("INSERT INTO applications (name) VALUES ('storable') RETURNING id")
    user_id: uuid.UUID = await db.fetchval(
        "INSERT INTO users (id, public_id, application_id, external_id) SELECT k, k, $1, 'u' FROM gen_random_uuid() k"
        " RETURNING id",
        application,
    )
    return user_id
