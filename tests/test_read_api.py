"""The read API: data a real sync stored (API -> worker -> simulators -> PostgreSQL) read back page
by page equals the database and what the simulator served; filters, cursors that neither repeat
nor skip rows sharing a time, tenants, bad parameters, and the query plans of a page."""

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.conftest import Factory, sim_records, start_sync, wait_for_task
from tests.fuzzing import FUZZ, HOSTILE, json_leaves, json_values, with_examples
from tests.test_worker import expected_samples
from wearsync.api import data
from wearsync.api.common import ApiError
from wearsync.api.responses import (
    DailyPage,
    DailyRecord,
    Page,
    RecoveryPage,
    RecoveryRecord,
    SamplePage,
    SampleRecord,
    SleepPage,
    SleepRecord,
    WorkoutPage,
    WorkoutRecord,
)
from wearsync.db import Executor, reads
from wearsync.db.records import upsert_records
from wearsync.records import Sample, Workout
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
# listing -> (its response model, its table, the column it is ordered by)
LISTS: dict[str, tuple[type[BaseModel], str, str]] = {
    "workouts": (WorkoutRecord, "workouts", "start_time"),
    "sleep": (SleepRecord, "sleep_sessions", "start_time"),
    "recovery": (RecoveryRecord, "recoveries", "recorded_at"),
    "daily": (DailyRecord, "daily_activity", "day"),
}
PAGES: dict[str, type[Page[Any]]] = {"workouts": WorkoutPage, "sleep": SleepPage, "recovery": RecoveryPage,
                                     "daily": DailyPage, "samples": SamplePage}  # fmt: skip


@pytest.fixture
async def settings(settings: Settings) -> Settings:
    # Whoop's reach cut to its simulated users' history below: a sync costs a few calls.
    return settings.replace(whoop_history_days=60, whoop_range_days=30)


def jsonable(value: Any) -> Any:
    """A stored value as the API documents it on the wire, written here rather than taken from the
    product's serializer: datetimes and dates in ISO 8601 (datetimes with their UTC offset), ids
    as text, numbers and JSON as they are."""
    if isinstance(value, datetime):
        assert value.utcoffset() == timedelta(0), "asyncpg reads timestamptz as UTC"
        return f"{value:%Y-%m-%dT%H:%M:%S}{f'.{value.microsecond:06d}' if value.microsecond else ''}+00:00"
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


async def read_all(
    client: Client, key: str, user_id: str, listing: str, query: str = "", limit: int = 3
) -> tuple[list[dict[str, Any]], int]:
    """Every item of a list, page by page as a client reads it; and the number of pages."""
    model = SampleRecord if listing == "samples" else LISTS[listing][0]
    items: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        params = f"limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        resp = await client.get(f"/api/v1/users/{user_id}/{listing}?{params}", headers={"X-API-Key": key})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        PAGES[listing].model_validate(body)
        for item in body["data"]:  # exactly the documented fields (raw only on request)
            assert set(item) | {"raw"} == set(model.model_fields), listing
        items += body["data"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert len(body["data"]) == limit, "a page before the last is full"
        assert pages < 1000, "paging does not end"


async def stored(db: asyncpg.Pool, listing: str, user_id: str, where: str = "TRUE") -> list[dict[str, Any]]:
    """The rows as the list should show them, read with SELECT * in (time, id) order."""
    model, table, order = LISTS[listing]
    rows = await db.fetch(
        f"SELECT * FROM {table} WHERE user_id = $1 AND {where} ORDER BY {order}, id", uuid.UUID(user_id)
    )
    return [{f: jsonable(row[f]) for f in model.model_fields if f != "raw"} for row in rows]


async def stored_samples(db: asyncpg.Pool, user_id: str, sample_type: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT provider, sample_type AS type, recorded_at, value FROM samples"
        " WHERE user_id = $1 AND sample_type = $2 ORDER BY recorded_at, provider",
        uuid.UUID(user_id),
        sample_type,
    )
    return [jsonable(dict(row)) for row in rows]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_a_synced_user_read_back_page_by_page_equals_the_database_and_the_simulator(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 60, "days_247": 10}
    task = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id))
    assert task["status"] == "succeeded", task
    served = await sim_records(sim_server, "suunto", sim_user)

    for listing in LISTS:
        items, pages = await read_all(client, key, user_id, listing)
        expected = await stored(db, listing, user_id)
        assert len(expected) > 3, listing  # more than one page
        assert items == expected, listing
        assert pages == -(-len(expected) // 3), listing  # the last page says it is the last
    workouts, _ = await read_all(client, key, user_id, "workouts", limit=100)
    starts = [at(w["start_time"]) for w in workouts]
    assert starts == sorted(starts)
    assert sorted((at(w["start_time"]), w["provider_record_id"]) for w in workouts) == sorted(
        (datetime.fromtimestamp(w["startTime"] / 1000, UTC), w["workoutKey"]) for w in served["workouts"]
    )

    heart_rate, _ = await read_all(client, key, user_id, "samples", "&type=heart_rate", limit=250)
    assert heart_rate == await stored_samples(db, user_id, "heart_rate")
    served_hr = {at: v for (kind, at), v in expected_samples(served["activity"]).items() if kind == "heart_rate"}
    assert [(at(s["recorded_at"]), s["value"]) for s in heart_rate] == sorted(served_hr.items())
    assert {s["provider"] for s in heart_rate} == {"suunto"}
    steps, _ = await read_all(client, key, user_id, "samples", "&type=steps", limit=1000)
    assert steps == await stored_samples(db, user_id, "steps")
    assert {s["type"] for s in steps} == {"steps"}

    # raw only on request, and then the upstream JSON as stored
    items, _ = await read_all(client, key, user_id, "sleep", "&include_raw=true", limit=100)
    raws = {r["id"]: r["raw"] for r in await db.fetch("SELECT id, raw FROM sleep_sessions")}
    assert [item["raw"] for item in items] == [raws[item["id"]] for item in items]
    samples, _ = await read_all(client, key, user_id, "samples", "&type=spo2&include_raw=1", limit=1000)
    assert all(s["raw"]["entryData"]["SpO2"] * 100 == s["value"] for s in samples)


def unix(value: datetime) -> int:
    return int(value.timestamp())


async def test_provider_and_time_filters(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 30, "days_247": 12}
    sim_state.provider("whoop").user_history[sim_user] = {"workouts": 30, "days_247": 12}
    await factory.connect(key, user_id, "whoop", sim_user)
    for provider in ("suunto", "whoop"):
        task = await wait_for_task(client, key, await start_sync(client, key, provider, user_id))
        assert task["status"] == "succeeded", task

    for listing in ("workouts", "sleep", "recovery"):
        both, _ = await read_all(client, key, user_id, listing, limit=10)
        assert both == await stored(db, listing, user_id)
        assert {item["provider"] for item in both} == {"suunto", "whoop"}, listing
        for provider in ("suunto", "whoop"):
            one, _ = await read_all(client, key, user_id, listing, f"&provider={provider}", limit=10)
            assert one == [item for item in both if item["provider"] == provider], listing

    # [start, end) on the start time, to the second; ISO 8601 or Unix seconds alike
    workouts = await stored(db, "workouts", user_id)
    start, end = at(workouts[10]["start_time"]), at(workouts[40]["start_time"])
    expected = await stored(db, "workouts", user_id, f"start_time >= to_timestamp({unix(start)})"
                            f" AND start_time < to_timestamp({unix(end)})")  # fmt: skip
    assert 25 < len(expected) <= 31
    for query in (f"&start={unix(start)}&end={unix(end)}", f"&start={start:%Y-%m-%dT%H:%M:%S}Z&end={unix(end)}"):
        assert (await read_all(client, key, user_id, "workouts", query, limit=4))[0] == expected
    suunto_only = [w for w in expected if w["provider"] == "suunto"]
    query = f"&start={unix(start)}&end={unix(end)}&provider=suunto"
    assert (await read_all(client, key, user_id, "workouts", query, limit=4))[0] == suunto_only
    assert (await read_all(client, key, user_id, "workouts", f"&start={unix(start)}&end={unix(start)}"))[0] == []

    # days: those whose midnight (UTC) is in [start, end)
    days = await stored(db, "daily", user_id)
    # four days in a row that have rows (the simulated Suunto watch is not worn on some days)
    present = {date.fromisoformat(d["day"]) for d in days}
    first = min(d for d in present if all(d + timedelta(days=i) in present for i in range(4)))
    midnight = datetime(first.year, first.month, first.day, tzinfo=UTC)
    query = f"&start={unix(midnight - timedelta(hours=12))}&end={quote((midnight + timedelta(days=4)).isoformat())}"
    shown, _ = await read_all(client, key, user_id, "daily", query)
    assert sorted({d["day"] for d in shown}) == [(first + timedelta(days=i)).isoformat() for i in range(4)]
    assert shown == [d for d in days if first.isoformat() <= d["day"] < (first + timedelta(days=4)).isoformat()]
    shown, _ = await read_all(client, key, user_id, "daily", f"&start={first.isoformat()}T00:00:01Z")
    assert shown[0]["day"] == (first + timedelta(days=1)).isoformat()


def workout(provider_record_id: str, start: datetime) -> Workout:
    return Workout(provider_record_id, "running", "run", start, start + timedelta(hours=1), {"id": provider_record_id})


async def test_rows_sharing_a_time_are_neither_repeated_nor_skipped(
    client: Client, factory: Factory, db: asyncpg.Pool
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    uid = uuid.UUID(user_id)
    noon = datetime(2025, 3, 1, 12, tzinfo=UTC)
    second = timedelta(seconds=1)
    async with db.acquire() as conn:
        for provider in ("whoop", "suunto", "garmin"):  # interleaved ids across providers
            rows = [workout(f"{provider}-{i}", noon) for i in range(7)]
            await upsert_records(conn, uid, provider, [workout(f"{provider}-early", noon - second), *rows])
        await upsert_records(conn, uid, "polar", [workout("polar-late", noon + second)])

    expected = await stored(db, "workouts", user_id)
    assert len(expected) == 3 * 8 + 1
    for limit in (1, 2, 4, 7, 100):
        shown, _ = await read_all(client, key, user_id, "workouts", limit=limit)
        assert shown == expected, limit
    # start is inclusive, end exclusive
    query = f"&start={unix(noon)}&end={unix(noon + second)}"
    assert (await read_all(client, key, user_id, "workouts", query, limit=5))[0] == [
        w for w in expected if w["start_time"] == noon.isoformat()
    ]
    assert len(await read_all(client, key, user_id, "workouts", query, limit=5)) == 2

    # A row stored while a client pages lands where it sorts: after the cursor, it is read.
    headers = {"X-API-Key": key}
    resp = await client.get(f"/api/v1/users/{user_id}/workouts?limit=5", headers=headers)
    first = await resp.json()
    async with db.acquire() as conn:
        await upsert_records(conn, uid, "strava", [workout("strava-new", noon)])  # the highest id
    rest, cursor = [], first["next_cursor"]
    while cursor:
        resp = await client.get(f"/api/v1/users/{user_id}/workouts?limit=5&cursor={cursor}", headers=headers)
        body = await resp.json()
        rest += body["data"]
        cursor = body["next_cursor"]
    assert first["data"] + rest == await stored(db, "workouts", user_id)
    assert [w["provider_record_id"] for w in rest[-2:]] == ["strava-new", "polar-late"]


async def test_samples_sharing_an_instant_are_ordered_by_provider(
    client: Client, factory: Factory, db: asyncpg.Pool
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    base = datetime(2025, 3, 1, tzinfo=UTC)
    async with db.acquire() as conn:
        for n, provider in enumerate(("whoop", "garmin", "suunto", "polar")):
            points = [base + timedelta(minutes=m) for m in range(6)] + [base + timedelta(seconds=30)]
            rows = [Sample("heart_rate", t, 60.0 + n, {"n": n}) for t in points]
            rows += [Sample("steps", t, 10.0, {"n": n}) for t in points]
            await upsert_records(conn, uuid.UUID(user_id), provider, rows)

    expected = await stored_samples(db, user_id, "heart_rate")
    assert len(expected) == 4 * 7
    assert [s["provider"] for s in expected[:9]] == ["garmin", "polar", "suunto", "whoop"] * 2 + ["garmin"]
    for limit in (1, 3, 4, 5, 1000):
        shown, _ = await read_all(client, key, user_id, "samples", "&type=heart_rate", limit=limit)
        assert shown == expected, limit
        one, _ = await read_all(client, key, user_id, "samples", "&type=heart_rate&provider=suunto", limit=limit)
        assert one == [s for s in expected if s["provider"] == "suunto"], limit
    query = f"&type=heart_rate&start={unix(base)}&end={unix(base + timedelta(minutes=1))}"
    shown, _ = await read_all(client, key, user_id, "samples", query, limit=2)
    assert shown == [s for s in expected if at(s["recorded_at"]) < base + timedelta(minutes=1)]
    assert len(shown) == 4 * 2


async def test_another_applications_key_gets_404_as_for_an_unknown_user(
    client: Client, factory: Factory, worker: Worker, sim_state: SimState
) -> None:
    key, their_user, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 5, "days_247": 2}
    await wait_for_task(client, key, await start_sync(client, key, "suunto", their_user))
    mine = {"X-API-Key": await factory.api_key("another-app")}
    for listing in (*LISTS, "samples?type=heart_rate"):
        theirs = await client.get(f"/api/v1/users/{their_user}/{listing}", headers={"X-API-Key": key})
        assert theirs.status == 200
        assert (await theirs.json())["data"], listing
        answers = []
        for user in (their_user, str(uuid.uuid4())):
            resp = await client.get(f"/api/v1/users/{user}/{listing}", headers=mine)
            answers.append((resp.status, await resp.json()))
        assert answers[0] == answers[1] == (404, {"detail": "User not found"}), listing


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_bad_parameters_are_refused_with_a_detail(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    async with db.acquire() as conn:
        rows = [workout(str(i), datetime(2025, 1, 1, tzinfo=UTC)) for i in range(3)]
        await upsert_records(conn, uuid.UUID(user_id), "suunto", rows)
    headers = {"X-API-Key": key}
    resp = await client.get(f"/api/v1/users/{user_id}/workouts?limit=1", headers=headers)
    good = (await resp.json())["next_cursor"]
    assert good
    cases = [
        ("workouts?start=yesterday", "Invalid query parameter 'start'"),
        ("workouts?end=-5", "Invalid query parameter 'end'"),
        ("sleep?start=2025-02-01&end=2025-01-01", "start must not be after end"),
        ("workouts?limit=0", "Invalid query parameter 'limit'"),
        ("workouts?limit=101", "Invalid query parameter 'limit'"),
        ("daily?limit=ten", "Invalid query parameter 'limit'"),
        ("samples?type=heart_rate&limit=1001", "Invalid query parameter 'limit'"),
        ("recovery?provider=fitbit", "Invalid query parameter 'provider'"),
        ("workouts?include_raw=maybe", "Invalid query parameter 'include_raw'"),
        ("workouts?from=2025-01-01", "Invalid query parameter 'from'"),
        ("samples", "Invalid query parameter 'type'"),
        ("samples?type=speed", "Invalid query parameter 'type'"),
        ("workouts?cursor=" + "x" * 201, "Invalid query parameter 'cursor'"),
        ("workouts?cursor=%FF%FE", "Invalid query parameter 'cursor'"),
        ("workouts?cursor=not-a-cursor", "Invalid query parameter 'cursor'"),
        ("workouts?cursor=" + good[:-3], "Invalid query parameter 'cursor'"),
        ("sleep?cursor=" + good, "Invalid query parameter 'cursor'"),  # another list's
        ("samples?type=steps&cursor=" + good, "Invalid query parameter 'cursor'"),
        ("workouts?cursor=" + cursor_of(["workouts", 10**30, 1]), "Invalid query parameter 'cursor'"),
        ("workouts?cursor=" + cursor_of(["workouts", -(10**17), 1]), "Invalid query parameter 'cursor'"),
        ("workouts?cursor=" + cursor_of(["workouts", 0, 2**63]), "Invalid query parameter 'cursor'"),
        ("workouts?cursor=" + cursor_of(["workouts", 0, True]), "Invalid query parameter 'cursor'"),
        ("workouts?cursor=" + cursor_of(["workouts", "0", 1]), "Invalid query parameter 'cursor'"),
        ("workouts?cursor=" + cursor_of({"workouts": 1, "a": 2, "b": 3}), "Invalid query parameter 'cursor'"),
        ("daily?cursor=" + cursor_of(["daily", "2025-13-01", 1]), "Invalid query parameter 'cursor'"),
        ("daily?cursor=" + cursor_of(["daily", 0, 1]), "Invalid query parameter 'cursor'"),
        ("samples?type=steps&cursor=" + cursor_of(["samples", 0, "fitbit"]), "Invalid query parameter 'cursor'"),
        ("samples?type=steps&cursor=" + cursor_of(["samples", 0.5, "polar"]), "Invalid query parameter 'cursor'"),
        ("samples?type=steps&cursor=" + cursor_of([[[[[[]]]]]] * 3), "Invalid query parameter 'cursor'"),
    ]
    for path, detail in cases:
        resp = await client.get(f"/api/v1/users/{user_id}/{path}", headers=headers)
        assert resp.status == 422, (path, await resp.text())
        body = await resp.json()
        assert set(body) == {"detail"}
        assert detail in body["detail"], (path, body)
    resp = await client.get("/api/v1/users/not-a-uuid/workouts", headers=headers)
    assert resp.status == 422
    assert "Invalid path parameter 'user_id'" in (await resp.json())["detail"]
    resp = await client.get(f"/api/v1/users/{user_id}/workouts")
    assert (resp.status, await resp.json()) == (401, {"detail": "Invalid or missing API key"})
    # A cursor made by hand is just a position, to the ends of time: it reads on from there.
    for listing, position, shown in [
        ("workouts", ["workouts", 0, 1], 3),
        ("workouts", ["workouts", -62135596800000000, 2**63 - 1], 3),  # 0001-01-01
        ("workouts", ["workouts", 253402300799999999, 1], 0),  # 9999-12-31T23:59:59.999999
        ("daily", ["daily", "9999-12-31", 2**63 - 1], 0),
        ("samples?type=steps&", ["samples", 253402300799999999, "whoop"], 0),
    ]:
        url = f"/api/v1/users/{user_id}/{listing}{'' if '?' in listing else '?'}cursor={cursor_of(position)}"
        resp = await client.get(url, headers=headers)
        assert resp.status == 200, (position, await resp.text())
        assert len((await resp.json())["data"]) == shown, position


@FUZZ
@given(
    cursor=st.one_of(
        st.text(max_size=200),
        st.binary(max_size=120).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        json_values.map(cursor_of),
        st.tuples(st.sampled_from([*LISTS, "samples"]), json_leaves, json_leaves).map(lambda t: cursor_of(list(t))),
    )
)
@with_examples({"cursor": cursor} for cursor in ("", "=", "!!", "e30", base64.urlsafe_b64encode(b"\xff").decode()))
@with_examples(
    {"cursor": cursor_of([listing, first, second])}
    for listing in ("workouts", "samples")
    for first, second in [
        (2**63, "a"), (-1, "a"), (253402300799999999 + 1, 1), ("9999-12-31", 2**63), ("0000-01-01", 1),
        (float("nan"), 1), (1, float("inf")), (True, "a"), (None, None), ("2024-01-01", "a\x00"),
    ]
)  # fmt: skip
@with_examples({"cursor": cursor_of(value)} for value in HOSTILE if not isinstance(value, str) or len(value) < 100)
def test_any_cursor_is_a_position_or_a_422(cursor: str) -> None:
    kinds = {"workouts": reads.WORKOUTS, "sleep": reads.SLEEP, "recovery": reads.RECOVERY, "daily": reads.DAILY}
    decoders: list[Callable[[str], tuple[Any, Any] | None]] = [data.sample_position]
    decoders += [partial(data.record_position, listing, kind) for listing, kind in kinds.items()]
    for decode in decoders:
        refused: tuple[int, str] | None = None
        try:
            position = decode(cursor)
        except ApiError as e:
            position, refused = None, (e.status, e.detail)
        if refused is not None:
            assert refused == (422, data.BAD_CURSOR)
        else:  # what it decodes to, PostgreSQL takes
            assert position is not None
            assert isinstance(position[0], date)
            assert type(position[1]) is str or 0 < position[1] < 2**63


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in plan_nodes(child))]


async def explain(conn: Executor, statement: str, args: str) -> list[dict[str, Any]]:
    plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {statement}({args})")
    return plan_nodes((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])


def one_range_scan(nodes: list[dict[str, Any]], index: str, limit: int) -> int:
    """The rows the plan's one scan read, asserting it is a range of the index bounded by the cursor,
    with no sort, that gave a page of `limit` rows."""
    scans = [n for n in nodes if "Scan" in n["Node Type"]]
    assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [("Index Scan", index)], nodes
    assert "ROW(" in scans[0]["Index Cond"], scans[0]  # the cursor bounds the range
    assert not [n for n in nodes if n["Node Type"] == "Sort"], nodes
    assert nodes[0]["Actual Rows"] == limit
    read: int = scans[0]["Actual Rows"] + scans[0].get("Rows Removed by Filter", 0)
    return read


async def test_a_page_is_an_index_range_scan_that_stops_after_the_page(factory: Factory, db: asyncpg.Pool) -> None:
    """With tables of a realistic shape, deep in a list, as a custom plan and as the generic plan
    a prepared statement may switch to: no sequential scan, no sort of the user's rows; every scan
    is a range of the expected index and reads about one page."""
    key = await factory.api_key()
    user_id, other = await factory.user(key), await factory.user(key)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    pair = "(ARRAY['suunto', 'whoop'])[g % 2 + 1]"  # providers interleaved, three rows per instant
    for uid in (user_id, other):
        await db.execute(
            f"""
            INSERT INTO workouts (user_id, provider, provider_record_id, sport, start_time, end_time, raw)
            SELECT $1, {pair}, g, 'running', $2 + g / 3 * interval '1 hour', $2, '{{}}'
            FROM generate_series(1, 20000) g;
            INSERT INTO sleep_sessions (user_id, provider, provider_record_id, start_time, end_time, raw)
            SELECT $1, {pair}, g, $2 + g / 3 * interval '1 hour', $2, '{{}}' FROM generate_series(1, 20000) g;
            INSERT INTO recoveries (user_id, provider, provider_record_id, recorded_at, raw)
            SELECT $1, {pair}, g, $2 + g / 3 * interval '1 hour', '{{}}' FROM generate_series(1, 20000) g;
            INSERT INTO daily_activity (user_id, provider, provider_record_id, day, raw)
            SELECT $1, {pair}, g, $2::date + g / 2, '{{}}' FROM generate_series(1, 20000) g;
            INSERT INTO samples (user_id, provider, sample_type, recorded_at, value, raw)
            SELECT $1, p, t, $2 + g * interval '1 minute', g, '{{}}'
            FROM generate_series(1, 50000) g, unnest(ARRAY['garmin', 'suunto']) p,
                 unnest(ARRAY['heart_rate', 'steps']) t;
            """.replace("$1", f"'{uid}'::uuid").replace("$2", f"'{t0.isoformat()}'::timestamptz")
        )
    await db.execute("ANALYZE workouts, sleep_sessions, recoveries, daily_activity, samples")

    limit = 51
    middle = f"'{(t0 + timedelta(days=20)).isoformat()}'"
    async with db.acquire() as conn:
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            for kind, index in ((reads.WORKOUTS, "workouts_user_time_id_idx"),
                                (reads.SLEEP, "sleep_sessions_user_time_id_idx"),
                                (reads.RECOVERY, "recoveries_user_time_id_idx"),
                                (reads.DAILY, "daily_activity_user_day_id_idx")):  # fmt: skip
                await conn.execute(f"PREPARE page AS {reads.RECORDS_SQL[kind]}")
                position = "'2024-06-01', 2001" if kind.is_day else f"{middle}, 2001"
                for provider in ("NULL", "'whoop'"):
                    nodes = await explain(conn, "page", f"'{user_id}', {position}, NULL, {provider}, false, {limit}")
                    read = one_range_scan(nodes, index, limit)
                    assert read <= 2 * limit + 1, (mode, kind, provider, read)  # one provider of two, interleaved
                await conn.execute("DEALLOCATE page")

            await conn.execute(f"PREPARE page AS {reads.SAMPLES_SQL}")
            for provider in ("NULL", "'suunto'"):
                args = f"'{user_id}', 'heart_rate', {middle}, 'garmin', NULL, {provider}, false, {limit}"
                nodes = await explain(conn, "page", args)
                scans = [n for n in nodes if "Scan" in n["Node Type"] and n.get("Actual Loops", 1)]
                assert {n["Node Type"] for n in scans} == {"Index Scan"}, (mode, nodes)
                assert {n["Index Name"] for n in scans} == {"samples_pkey"}
                assert nodes[0]["Actual Rows"] == limit
                # each provider's range stops after a page (a disabled branch reads nothing)
                assert all(n["Actual Rows"] <= limit for n in scans), nodes
                assert sum(n["Actual Rows"] for n in scans) <= 2 * limit, nodes
            await conn.execute("DEALLOCATE page")
        await conn.execute("RESET plan_cache_mode")


async def test_a_record_changed_upstream_shows_a_later_updated_at_and_an_unchanged_one_keeps_its_own(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    """The rule (README, db/records.py): a re-sync rewrites a row only when its upstream JSON
    changed, and then `updated_at` is the time of that write. Checked against PostgreSQL's clock
    read between the two syncs, and the read API's values parsed, not re-serialized."""
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 8, "days_247": 1}
    first = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id, "data_type=workouts"))
    assert first["status"] == "succeeded", first
    before = {w["provider_record_id"]: w for w in (await read_all(client, key, user_id, "workouts", limit=100))[0]}
    assert len(before) == 8
    between: datetime = await db.fetchval("SELECT clock_timestamp()")
    changed = sorted(before)[3]
    url = sim_server.make_url(f"/_sim/suunto/users/{sim_user}/events")
    event = {"kind": "update", "workoutKey": changed, "changes": {"totalDistance": 12345.5}}
    async with aiohttp.ClientSession() as session, session.post(url, json=event) as resp:
        assert resp.status == 200, await resp.text()
    # since=0: every workout is fetched and written again, the unchanged ones as they were.
    query = "data_type=workouts&since=0"
    second = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id, query))
    assert second["status"] == "succeeded", second
    assert second["progress"]["workouts"]["records"]["workouts"] == 8
    after = {w["provider_record_id"]: w for w in (await read_all(client, key, user_id, "workouts", limit=100))[0]}

    assert after.keys() == before.keys()
    assert after[changed]["distance_m"] == 12345.5
    assert at(after[changed]["updated_at"]) > between > at(before[changed]["updated_at"])
    assert after[changed]["created_at"] == before[changed]["created_at"]
    for record_id in before.keys() - {changed}:
        assert after[record_id] == before[record_id], record_id  # updated_at too: not rewritten
    rows = await db.fetch("SELECT provider_record_id, created_at, updated_at FROM workouts")
    assert {r["provider_record_id"]: r["updated_at"] for r in rows} == {
        record_id: at(w["updated_at"]) for record_id, w in after.items()
    }
