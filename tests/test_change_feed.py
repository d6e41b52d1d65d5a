"""The change feed (`order=changes` on every data list): rows in the order their writes committed,
polled with the cursor each page gives. A transaction that took its number early and commits late
is not skipped (two real connections); an update moves a row to the end; a real sync, re-run after
an upstream change, brings exactly the changed row; filters, tenants, cursors; the query plan."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, sim_event, start_sync, wait_for_task
from tests.helpers import wait_until
from tests.test_read_api import LISTS, PAGES, explain, jsonable, one_range_scan
from wearsync.api.common import DEPS
from wearsync.db import changes, reads
from wearsync.db.records import upsert_records
from wearsync.records import Record, Sample, Workout
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
T0 = datetime(2025, 3, 1, tzinfo=UTC)


async def settled(client: Client) -> None:
    """Wait until every transaction in progress now has ended. The feed's horizon is the server's
    oldest running write transaction, in any database: other tests' writers on a shared PostgreSQL
    (xdist workers, CI) hold it back for as long as they run, which is the feed's rule, not a miss."""
    app = client.app
    assert app is not None
    pool = app[DEPS].db
    xmax = await pool.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")

    async def passed() -> bool:
        done: bool = await pool.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint >= $1", xmax)
        return done

    await wait_until(passed, "the transactions in progress to end")


async def poll(
    client: Client,
    key: str,
    user_id: str,
    listing: str,
    cursor: str | None,
    query: str = "",
    limit: int = 100,
    settle: bool = True,
) -> tuple[list[dict[str, Any]], str]:
    """One poll of a list's change feed, once the server's other writers are out of the way (unless
    the test itself holds a transaction open): its rows and the cursor to poll with next."""
    if settle:
        await settled(client)
    params = f"order=changes&limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
    resp = await client.get(f"/api/v1/users/{user_id}/{listing}?{params}", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    PAGES[listing].model_validate(body)
    assert isinstance(body["next_cursor"], str), "a feed's cursor is never null"
    return body["data"], body["next_cursor"]


async def drain(
    client: Client, key: str, user_id: str, listing: str, cursor: str | None, query: str = "", limit: int = 3
) -> tuple[list[dict[str, Any]], str]:
    """Every row the feed has now, page by page, until a page is short; and the cursor then."""
    items: list[dict[str, Any]] = []
    while True:
        page, cursor = await poll(client, key, user_id, listing, cursor, query, limit)
        items += page
        if len(page) < limit:
            return items, cursor
        assert len(items) < 10_000, "the feed does not end"


async def internal_id(db: asyncpg.Pool, user_id: str) -> uuid.UUID:
    found: uuid.UUID = await db.fetchval("SELECT id FROM users WHERE public_id = $1", uuid.UUID(user_id))
    return found


def workout(record_id: str, start: datetime, **raw: Any) -> Workout:
    end = start + timedelta(hours=1)
    return Workout(record_id, "running", None, start, end, raw={"id": record_id, **raw})


async def store(db: asyncpg.Pool, uid: uuid.UUID, records: list[Record]) -> None:
    async with db.acquire() as conn:
        await upsert_records(conn, uid, "suunto", records)


async def test_a_transaction_that_takes_its_number_early_and_commits_late_is_in_the_next_poll(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    uid = await internal_id(db, user_id)
    await store(db, uid, [workout("before", T0)])
    seen, cursor = await poll(client, key, user_id, "workouts", None)
    assert [w["provider_record_id"] for w in seen] == ["before"]

    slow = await asyncpg.connect(settings.database_url)
    fast = await asyncpg.connect(settings.database_url)
    try:
        slow_tx = slow.transaction()
        await slow_tx.start()
        await upsert_records(slow, uid, "suunto", [workout("early-late", T0 + timedelta(days=1))])
        # Another writer starts after it and commits first.
        await upsert_records(fast, uid, "suunto", [workout("late-early", T0 + timedelta(days=2))])
        await upsert_records(fast, uid, "suunto", [workout("before", T0, changed=True)])
        numbers = await db.fetch("SELECT provider_record_id, change_seq FROM workouts")
        seq = {r["provider_record_id"]: r["change_seq"] for r in numbers}
        assert seq.keys() == {"before", "late-early"}  # not committed: invisible to everyone else

        # The feed stops before the open transaction: the committed rows behind it wait for it.
        held, held_cursor = await poll(client, key, user_id, "workouts", cursor, settle=False)
        assert held == []
        assert held_cursor == cursor

        await slow_tx.commit()
        seq["early-late"] = await db.fetchval("SELECT change_seq FROM workouts WHERE provider_record_id = 'early-late'")
    finally:
        await slow.close()
        await fast.close()
    # Its number was taken before the other writes'; it is in the next poll, in commit order.
    assert seq["early-late"] < seq["late-early"] < seq["before"]
    seen, cursor = await poll(client, key, user_id, "workouts", held_cursor)
    assert [w["provider_record_id"] for w in seen] == ["early-late", "late-early", "before"]
    assert await poll(client, key, user_id, "workouts", cursor) == ([], cursor)


async def test_only_what_was_written_again_comes_again(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    uid = await internal_id(db, user_id)
    await store(db, uid, [workout(f"w{i}", T0 + timedelta(days=i)) for i in range(7)])
    first, cursor = await drain(client, key, user_id, "workouts", None)
    assert [w["provider_record_id"] for w in first] == [f"w{i}" for i in range(7)]

    # The same page again changes nothing (the upsert leaves unchanged rows alone); one row changed
    # and one new are the feed's next rows, the changed one where it moved to.
    await store(db, uid, [workout(f"w{i}", T0 + timedelta(days=i)) for i in range(7)])
    assert await poll(client, key, user_id, "workouts", cursor) == ([], cursor)
    await store(db, uid, [workout("w2", T0 + timedelta(days=2), distance=5)])
    await store(db, uid, [workout("w7", T0 + timedelta(days=7))])
    later, cursor = await drain(client, key, user_id, "workouts", cursor)
    assert [w["provider_record_id"] for w in later] == ["w2", "w7"]
    stored = await db.fetchrow("SELECT id, updated_at FROM workouts WHERE provider_record_id = 'w2'")
    assert stored is not None
    assert later[0]["id"] == stored["id"]
    assert later[0]["updated_at"] == jsonable(stored["updated_at"])
    assert await poll(client, key, user_id, "workouts", cursor) == ([], cursor)


async def test_a_resync_after_an_upstream_change_brings_exactly_the_changed_record(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 8, "days_247": 1}
    first = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id, "data_type=workouts"))
    assert first["status"] == "succeeded", first
    synced, cursor = await drain(client, key, user_id, "workouts", None)
    by_key = {w["provider_record_id"]: w for w in synced}
    assert len(by_key) == len(synced) == 8

    changed = sorted(by_key)[3]
    await sim_event(
        sim_server, "suunto", sim_user, {"kind": "update", "workoutKey": changed, "changes": {"totalDistance": 4321.5}}
    )
    second = await wait_for_task(
        client, key, await start_sync(client, key, "suunto", user_id, "data_type=workouts&since=0")
    )
    assert second["status"] == "succeeded", second
    assert second["progress"]["workouts"]["records"]["workouts"] == 8  # all fetched and written again
    news, _ = await drain(client, key, user_id, "workouts", cursor)
    assert [(w["provider_record_id"], w["distance_m"]) for w in news] == [(changed, 4321.5)]


@pytest.mark.parametrize("listing", [*LISTS, "samples"])
async def test_every_list_feeds_each_row_once_in_commit_order_with_its_filters(
    client: Client, factory: Factory, db: asyncpg.Pool, listing: str
) -> None:
    """Rows of several transactions, read three at a time, equal the table in (change_xid,
    change_seq) order; a filter leaves out what it should."""
    key = await factory.api_key()
    user_id, other = await factory.user(key), await factory.user(key)
    uid, other_uid = await internal_id(db, user_id), await internal_id(db, other)
    table = "samples" if listing == "samples" else LISTS[listing][1]
    time = "recorded_at" if listing == "samples" else LISTS[listing][2]
    for n in range(4):  # interleaved providers and times, each batch its own transaction
        for uid_ in (uid, other_uid):
            await insert_rows(db, table, uid_, n)
    query = "&type=heart_rate" if listing == "samples" else ""
    items, _ = await drain(client, key, user_id, listing, None, query)
    rows = await db.fetch(
        f"SELECT * FROM {table} WHERE user_id = $1 {'AND sample_type = $2' if query else ''}"
        " ORDER BY change_xid, change_seq",
        *((uid, "heart_rate") if query else (uid,)),
    )
    assert len(rows) == (16 if query else 8)
    shown = [jsonable({f: row[f] for f in ("provider", time)}) for row in rows]
    assert [{"provider": i["provider"], time: i[time]} for i in items] == shown

    filtered, _ = await drain(client, key, user_id, listing, None, f"{query}&provider=whoop")
    assert [i["provider"] for i in filtered] == [s["provider"] for s in shown if s["provider"] == "whoop"]
    boundary = "2025-03-03"  # the rows of n=2 and n=3
    windowed, _ = await drain(client, key, user_id, listing, None, f"{query}&start={boundary}")
    assert [i[time] for i in windowed] == [s[time] for s in shown if s[time] >= boundary]
    assert all("feed_xid" not in i and "raw" not in i for i in items)
    raw, _ = await drain(client, key, user_id, listing, None, f"{query}&include_raw=true")
    assert [i["raw"] for i in raw] == [r["raw"] for r in rows]


async def insert_rows(db: asyncpg.Pool, table: str, uid: uuid.UUID, n: int) -> None:
    """Rows of day n, whoop's then suunto's, in one transaction."""
    day = T0 + timedelta(days=n)
    if table == "samples":
        sql = """INSERT INTO samples (user_id, provider, sample_type, recorded_at, value, raw)
                 SELECT $1, p, t, $2::timestamptz, $3::int, jsonb_build_object('n', $3::int, 'p', p, 't', t)
                 FROM unnest(ARRAY['whoop', 'suunto']) p, unnest(ARRAY['heart_rate', 'steps']) t"""
        for at in (day, day + timedelta(minutes=1)):
            await db.execute(sql, uid, at, n)
        return
    columns = {
        "workouts": ("sport, start_time, end_time", "'running', $2, $2"),
        "sleep_sessions": ("start_time, end_time", "$2, $2"),
        "recoveries": ("recorded_at", "$2"),
        "daily_activity": ("day", "$2::date"),
    }[table]
    await db.execute(
        f"""INSERT INTO {table} (user_id, provider, provider_record_id, {columns[0]}, raw)
            SELECT $1, p, $3::text || p, {columns[1]}, jsonb_build_object('n', $3::int, 'p', p)
            FROM unnest(ARRAY['whoop', 'suunto']) p""",
        uid, day, str(n),
    )  # fmt: skip


async def test_cursors_of_another_list_or_order_and_other_tenants_are_refused(
    client: Client, factory: Factory, db: asyncpg.Pool
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    uid = await internal_id(db, user_id)
    await store(
        db, uid, [*(workout(f"w{i}", T0 + timedelta(days=i)) for i in range(3)), Sample("heart_rate", T0, 60.0, {})]
    )
    _, feed_cursor = await poll(client, key, user_id, "workouts", None, limit=1)
    resp = await client.get(f"/api/v1/users/{user_id}/workouts?limit=1", headers={"X-API-Key": key})
    time_cursor = (await resp.json())["next_cursor"]
    _, samples_cursor = await poll(client, key, user_id, "samples", None, "&type=heart_rate")

    def get(listing: str, query: str, with_key: str = key) -> Any:
        return client.get(f"/api/v1/users/{user_id}/{listing}?{query}", headers={"X-API-Key": with_key})

    for listing, query in (
        ("workouts", f"order=changes&cursor={time_cursor}"),
        ("workouts", f"cursor={feed_cursor}"),
        ("sleep", f"order=changes&cursor={feed_cursor}"),
        ("workouts", f"order=changes&cursor={samples_cursor}"),
        ("workouts", "order=changes&cursor=WyJ3b3Jrb3V0czpjaGFuZ2VzIiwtMSwwXQ"),  # ["workouts:changes",-1,0]
        ("workouts", "order=changes&cursor=bm9wZQ"),
        ("workouts", "order=newest"),
    ):
        resp = await get(listing, query)
        assert resp.status == 422, (listing, query, await resp.text())
        assert "cursor" in (await resp.json())["detail"] or "order" in query
    other_key = await factory.api_key("globex")
    resp = await get("workouts", "order=changes", other_key)
    assert resp.status == 404, await resp.text()


async def test_a_feed_page_is_a_range_scan_of_the_change_index(factory: Factory, db: asyncpg.Pool) -> None:
    """Deep in a long feed, as custom and as generic plan: one index scan of the change index that
    reads about one page (two with a provider filter over two interleaved providers), no sort."""
    key = await factory.api_key()
    users = [await internal_id(db, await factory.user(key)) for _ in range(2)]
    pair = "(ARRAY['suunto', 'whoop'])[g % 2 + 1]"
    for uid in users:
        for first in range(1, 8001, 2000):  # several transactions
            await db.execute(
                f"""INSERT INTO workouts (user_id, provider, provider_record_id, sport, start_time, end_time, raw)
                    SELECT $1, {pair}, g, 'running', $2::timestamptz + g * interval '1 hour', $2, '{{}}'
                    FROM generate_series($3::int, $3 + 1999) g""",
                uid, T0, first,
            )  # fmt: skip
            await db.execute(
                """INSERT INTO samples (user_id, provider, sample_type, recorded_at, value, raw)
                   SELECT $1, p, t, $2::timestamptz + g * interval '1 minute', g, '{}'
                   FROM generate_series($3::int, $3 + 1999) g, unnest(ARRAY['garmin', 'suunto']) p,
                        unnest(ARRAY['heart_rate', 'steps']) t""",
                uid, T0, first,
            )  # fmt: skip
    await db.execute("ANALYZE workouts, samples")
    middle = await db.fetchrow(
        "SELECT change_xid::text::bigint AS x, change_seq AS s FROM workouts WHERE user_id = $1"
        " ORDER BY change_xid, change_seq OFFSET 4000 LIMIT 1",
        users[0],
    )
    assert middle is not None
    limit = 51
    async with db.acquire() as conn:
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            for sql, args, index, one_of_two in (
                (changes.RECORDS_SQL[reads.WORKOUTS], "{u}, {x}, {s}, NULL, NULL, false, {p}, {n}",
                 "workouts_user_change_idx", "'whoop'"),
                (changes.SAMPLES_SQL, "{u}, 'heart_rate', {x}, {s}, NULL, NULL, false, {p}, {n}",
                 "samples_user_type_change_idx", "'garmin'"),
            ):  # fmt: skip
                await conn.execute(f"PREPARE page AS {sql}")
                for provider, most in (("NULL", limit), (one_of_two, 2 * limit + 1)):
                    values = args.format(u=f"'{users[0]}'", x=middle["x"], s=middle["s"], p=provider, n=limit)
                    read = one_range_scan(await explain(conn, "page", values), index, limit)
                    assert read <= most, (mode, provider, read)
                await conn.execute("DEALLOCATE page")
        await conn.execute("RESET plan_cache_mode")
