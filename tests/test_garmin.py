"""Garmin end to end: API -> arq -> worker -> Garmin simulator over a socket -> PostgreSQL.

A sync asks Garmin for backfills (the data then comes by webhook, a later piece), so these tests
check what the simulator recorded as asked. The pull of summaries (what a ping's callback URL
points at) is run with a real SyncContext, and its rows are compared field by field with what the
simulator says it served, computed here independently of the client's mapping code."""

import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker
from prometheus_client import REGISTRY
from yarl import URL

from tests.conftest import Factory, refreshes, sim_records, start_sync, stored_tokens, wait_for_task
from tests.helpers import wait_until
from wearsync import backfills
from wearsync.credentials import Credentials
from wearsync.db import connections, keys, tasks
from wearsync.deps import Deps
from wearsync.models import DataType, SyncParams
from wearsync.providers import garmin
from wearsync.providers.core import Connection, SyncContext
from wearsync.providers.errors import ProviderError
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState
from wearsync.store import StoredContext

Client = TestClient[web.Request, web.Application]
DAY = 86400
WINDOW = 30 * DAY
SPORTS = {"RUNNING": "running", "CYCLING": "cycling", "LAP_SWIMMING": "swimming", "WALKING": "walking",
          "HIKING": "hiking", "STRENGTH_TRAINING": "strength_training", "YOGA": "yoga",
          "TREADMILL_RUNNING": "treadmill_running", "INDOOR_CYCLING": "indoor_cycling",
          "MOUNTAIN_BIKING": "mountain_biking", "TRAIL_RUNNING": "trail_running"}  # fmt: skip
TYPES_247 = {"dailies", "epochs", "sleeps", "hrv"}


def unix(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


def asked(served: dict[str, Any]) -> list[tuple[str, int, int]]:
    return sorted((b["type"], b["start"], b["end"]) for b in served["backfills"])


def listed(task: dict[str, Any], types: Any = None) -> list[tuple[str, int, int, str]]:
    """The backfill windows the task endpoint lists (of some types only, if given)."""
    windows = task["backfill"]["windows"]
    return sorted((w["type"], w["start"], w["end"], w["status"]) for w in windows if not types or w["type"] in types)


async def wait_for_requests(client: Client, key: str, task_id: str) -> dict[str, Any]:
    """Poll the task until its backfill requests are done: each data type awaits its deliveries
    (or failed), or the task ended."""

    async def requested() -> dict[str, Any] | None:
        task = await wait_for_task_state(client, key, task_id)
        statuses = {p["status"] for p in task["progress"].values()}
        done = task["status"] not in ("queued", "running") or statuses <= {"awaiting_delivery", "failed"}
        return task if done else None

    return await wait_until(requested, "the backfill requested")


async def wait_for_task_state(client: Client, key: str, task_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    task: dict[str, Any] = await resp.json()
    return task


def awaiting_runs() -> float:
    """Garmin task runs that ended waiting for their deliveries, as this process's metrics count them."""
    value = REGISTRY.get_sample_value(
        "wearsync_task_run_duration_seconds_count", {"provider": "garmin", "outcome": "awaiting_delivery"}
    )
    return value or 0.0


def assert_awaiting(task: dict[str, Any]) -> None:
    """The task asked for everything and waits, running, for Garmin to deliver it."""
    assert task["status"] == "running", task
    assert {t: p["status"] for t, p in task["progress"].items()} == dict.fromkeys(
        task["data_types"], "awaiting_delivery"
    )
    assert (task["result"], task["error"]) == (None, None)
    backfill = task["backfill"]
    assert backfill["awaiting"] == backfill["requested"] - backfill["delivered"] > 0
    assert datetime.fromisoformat(backfill["deliveries_due_at"]) > datetime.now(UTC) + timedelta(hours=23)


# ---- syncs: backfill requests ---------------------------------------------------------------


async def test_sync_without_a_range_asks_for_the_last_30_days(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("garmin")
    runs_before = awaiting_runs()
    before = int(time.time())
    task = await wait_for_requests(client, key, await start_sync(client, key, "garmin", user_id))
    after = int(time.time()) + 1

    assert_awaiting(task)  # the data comes by webhook: none has yet
    assert awaiting_runs() == runs_before + 1  # the run's outcome, in the metrics
    assert task["params"] == {"summary_start_time": None, "summary_end_time": None}
    backfills = (await sim_records(sim_server, "garmin", sim_user))["backfills"]
    assert sorted(b["type"] for b in backfills) == ["activities", "dailies", "epochs", "hrv", "sleeps"]
    for b in backfills:
        assert before <= b["end"] <= after  # one window, ending now
        assert b["end"] - b["start"] == WINDOW
    workouts, d247 = task["progress"]["workouts"], task["progress"]["data_247"]
    assert listed(task) == sorted((b["type"], b["start"], b["end"], "accepted") for b in backfills)
    assert (task["backfill"]["requested"], task["backfill"]["delivered"]) == (5, 0)  # no webhook target set
    assert (workouts["pages"], workouts["pages_total"], d247["pages"], d247["pages_total"]) == (1, 1, 4, 4)
    calls = [r for r in sim_state.requests if r["provider"] == "garmin" and r["path"].startswith("/wellness")]
    assert Counter((r["path"], r["status"]) for r in calls) == {
        (f"/wellness-api/rest/backfill/{t}", 202): 1 for t in ("activities", *TYPES_247)
    } | {("/wellness-api/rest/user/id", 200): 1}  # connecting learnt whose the token is
    assert await db.fetchval("SELECT count(*) FROM workouts") == 0  # the data comes by webhook


async def test_a_task_waiting_for_deliveries_is_not_taken_for_lost(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool
) -> None:
    """Its job has ended and nothing progresses for hours: that is the wait, not a lost job the
    reaper should run again."""
    key, user_id, _ = await factory.connected_user("garmin")
    task_id = await start_sync(client, key, "garmin", user_id, "data_type=workouts")
    assert_awaiting(await wait_for_requests(client, key, task_id))
    await db.execute("UPDATE sync_tasks SET updated_at = now() - interval '3 hours' WHERE id = $1", uuid.UUID(task_id))
    assert await tasks.possibly_lost_tasks(db, queued_for_s=60, idle_for_s=3600) == []


@pytest.mark.parametrize(
    ("query", "data_type"),
    [
        ("summary_start_time=2026-08-01&summary_end_time=2026-10-15", "all"),
        (f"summary_start_time={unix('2026-08-01')}&summary_end_time={unix('2026-10-15')}", "247"),
    ],
)
async def test_a_range_is_cut_into_30_day_windows(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, query: str, data_type: str
) -> None:
    key, user_id, sim_user = await factory.connected_user("garmin")
    task = await wait_for_requests(
        client, key, await start_sync(client, key, "garmin", user_id, f"{query}&data_type={data_type}")
    )

    assert_awaiting(task)
    start, end = unix("2026-08-01"), unix("2026-10-15")  # 75 days, as ISO dates or Unix seconds
    assert task["params"] == {"summary_start_time": start, "summary_end_time": end}
    windows = [(start, start + WINDOW), (start + WINDOW, start + 2 * WINDOW), (start + 2 * WINDOW, end)]
    types = ("activities", *TYPES_247) if data_type == "all" else TYPES_247
    expected = sorted((t, s, e) for s, e in windows for t in types)
    assert asked(await sim_records(sim_server, "garmin", sim_user)) == expected
    assert listed(task, TYPES_247) == [(*w, "accepted") for w in expected if w[0] != "activities"]
    assert task["progress"]["data_247"]["pages"] == task["progress"]["data_247"]["pages_total"] == 12
    if data_type == "all":
        assert listed(task, {"activities"}) == [("activities", s, e, "accepted") for s, e in windows]
    else:
        assert task["data_types"] == ["data_247"]


async def test_only_a_start_reaches_until_now(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer
) -> None:
    key, user_id, sim_user = await factory.connected_user("garmin")
    start = int(time.time()) - 40 * DAY
    task = await wait_for_requests(
        client, key, await start_sync(client, key, "garmin", user_id, f"data_type=workouts&summary_start_time={start}")
    )
    assert_awaiting(task)
    (first, second) = asked(await sim_records(sim_server, "garmin", sim_user))
    assert first == ("activities", start, start + WINDOW)
    assert second[1] == start + WINDOW
    assert abs(second[2] - time.time()) < 5


async def wait_out(db: asyncpg.Pool, settings: Settings, task_id: str) -> None:
    """The task's wait for its deliveries has passed (as WEARSYNC_GARMIN_BACKFILL_WAIT_S later):
    the minutely settling ends it."""
    await db.execute("UPDATE sync_tasks SET deliveries_due_at = now() WHERE id = $1", uuid.UUID(task_id))
    assert await backfills.settle_tasks(db, garmin.PROVIDER, garmin.PROVIDER.settings(settings)) == 1


async def test_asking_for_the_same_range_again_is_a_duplicate_and_still_succeeds(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, sim_state: SimState,
    db: asyncpg.Pool, settings: Settings,
) -> None:  # fmt: skip
    key, user_id, sim_user = await factory.connected_user("garmin")
    query = "summary_start_time=2026-09-01&summary_end_time=2026-10-15"
    first_id = await start_sync(client, key, "garmin", user_id, query)
    assert_awaiting(await wait_for_requests(client, key, first_id))
    # The same sync while the first waits for its deliveries is the first.
    assert await start_sync(client, key, "garmin", user_id, query) == first_id
    await wait_out(db, settings, first_id)  # no webhook target: nothing came
    first = await wait_for_task(client, key, first_id)
    second = await wait_for_requests(client, key, await start_sync(client, key, "garmin", user_id, query))

    assert first["status"] == "partial"
    assert_awaiting(second)  # asked again: Garmin answers 409 and delivers all the same
    assert len((await sim_records(sim_server, "garmin", sim_user))["backfills"]) == 2 * 5  # nothing new recorded
    assert [w[3] for w in listed(first)] == ["accepted"] * 10
    assert [w[:3] for w in listed(second)] == [w[:3] for w in listed(first)]
    assert [w[3] for w in listed(second)] == ["duplicate"] * 10
    assert {t: (p["pages"], p["pages_total"]) for t, p in second["progress"].items()} == {
        "workouts": (2, 2),
        "data_247": (8, 8),
    }
    assert Counter(r["status"] for r in sim_state.requests if "/backfill/" in r["path"]) == {202: 10, 409: 10}


async def test_sync_mode_returns_details(client: Client, factory: Factory, sim_server: TestServer) -> None:
    key, user_id, sim_user = await factory.connected_user("garmin")
    resp = await client.post(
        f"/api/v1/garmin/users/{user_id}/sync?async=false&summary_start_time=2026-10-01", headers={"X-API-Key": key}
    )
    assert resp.status == 200
    body = await resp.json()
    assert (body["success"], body["details"]) == (True, {"workouts": True, "data_247": True})
    assert {b[0] for b in asked(await sim_records(sim_server, "garmin", sim_user))} == {"activities", *TYPES_247}


async def test_a_refused_backfill_type_leaves_the_task_partial(
    client: Client, factory: Factory, worker: Worker, sim_state: SimState, db: asyncpg.Pool, settings: Settings
) -> None:
    key, user_id, _ = await factory.connected_user("garmin")
    sim_state.faults.append(Fault("garmin", "/wellness-api/rest/backfill/sleeps", "status", 500, count=-1))
    task_id = await start_sync(client, key, "garmin", user_id)
    task = await wait_for_requests(client, key, task_id)
    assert task["status"] == "running"  # for the deliveries of the workouts it asked for
    assert {t: p["status"] for t, p in task["progress"].items()} == {
        "workouts": "awaiting_delivery", "data_247": "failed"
    }  # fmt: skip
    assert "/wellness-api/rest/backfill/sleeps" in task["progress"]["data_247"]["error"]
    await wait_out(db, settings, task_id)
    task = await wait_for_task(client, key, task_id)
    assert task["status"] == "partial"
    assert task["result"] == {"workouts": False, "data_247": False}  # nothing was delivered either
    assert "/wellness-api/rest/backfill/sleeps" in task["error"]
    assert "HTTP 500" in task["error"]


# ---- tokens and limits ----------------------------------------------------------------------


async def refresh_grant(settings: Settings, refresh_token: str) -> int:
    config = garmin.PROVIDER.settings(settings)
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token,
            "client_id": config.client_id, "client_secret": config.client_secret}  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{config.auth_url}/di-oauth2-service/oauth/token", data=form) as resp,
    ):
        return resp.status


async def test_an_expiring_token_is_refreshed_and_the_refresh_token_rotates(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, settings: Settings
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    await factory.connect(key, user_id, "garmin", f"g{uuid.uuid4().hex[:8]}", expires_at="2000-01-01T00:00:00Z")
    old = (await stored_tokens(db, settings))["refresh_token"]
    task = await wait_for_requests(client, key, await start_sync(client, key, "garmin", user_id))

    assert_awaiting(task)
    assert refreshes(sim_state, "garmin") == 1  # both data types, one refresh
    row = await stored_tokens(db, settings)
    assert row is not None
    assert row["refresh_token"] != old
    assert row["expires_at"] > datetime.now(UTC) + timedelta(hours=23)  # Garmin's day-long access tokens
    assert not [r for r in sim_state.requests if r["status"] == 401]
    assert await refresh_grant(settings, old) == 400  # used once: refused
    assert await refresh_grant(settings, row["refresh_token"]) == 200


async def test_429_and_5xx_bursts_on_backfill_are_survived(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, sim_state: SimState
) -> None:
    key, user_id, sim_user = await factory.connected_user("garmin")
    sim_state.faults.append(Fault("garmin", "/wellness-api/rest/backfill", "ratelimit", count=3))
    sim_state.faults.append(Fault("garmin", "/wellness-api/rest/backfill", "status", status=503, count=2))
    task = await wait_for_requests(client, key, await start_sync(client, key, "garmin", user_id))

    assert_awaiting(task)
    statuses = Counter(r["status"] for r in sim_state.requests if "/backfill/" in r["path"])
    assert statuses == {"fault:ratelimit": 3, "fault:status": 2, 202: 5}
    backfills = asked(await sim_records(sim_server, "garmin", sim_user))
    assert [b[0] for b in backfills] == ["activities", "dailies", "epochs", "hrv", "sleeps"]


# ---- the simulator's contract ---------------------------------------------------------------


async def test_simulator_limits_and_errors(factory: Factory, settings: Settings) -> None:
    tokens = await factory.sim_tokens("garmin", "limits")
    assert tokens.raw["refresh_token_expires_in"] > 0
    assert tokens.expires_at is not None
    api = garmin.PROVIDER.settings(settings).api_url + "/wellness-api/rest"
    bearer = {"Authorization": f"Bearer {tokens.access_token}"}
    cases = [
        ("/backfill/dailies", {"summaryStartTimeInSeconds": 0, "summaryEndTimeInSeconds": WINDOW + 1}, bearer, 400),
        ("/backfill/dailies", {"summaryStartTimeInSeconds": 0, "summaryEndTimeInSeconds": WINDOW}, bearer, 202),
        ("/backfill/dailies", {"summaryStartTimeInSeconds": 0, "summaryEndTimeInSeconds": WINDOW}, bearer, 409),
        ("/dailies", {"uploadStartTimeInSeconds": 0, "uploadEndTimeInSeconds": DAY + 1}, bearer, 400),
        ("/dailies", {"uploadStartTimeInSeconds": 0, "uploadEndTimeInSeconds": DAY}, {}, 401),
        ("/dailies", {"uploadStartTimeInSeconds": 0, "uploadEndTimeInSeconds": DAY}, bearer, 200),
    ]
    async with aiohttp.ClientSession() as session:
        for path, params, headers, status in cases:
            async with session.get(api + path, params=params, headers=headers) as resp:
                assert resp.status == status, (path, params)
                if status >= 400:
                    assert "errorMessage" in await resp.json()
                elif status == 202:
                    assert await resp.read() == b""


# ---- pulls: what ping callbacks point at, field by field ------------------------------------


async def pull_context(deps: Deps, key: str, user_id: str) -> SyncContext[garmin.GarminSettings]:
    """A SyncContext as the worker builds one, for a task of its own."""
    uid, task_id = uuid.UUID(user_id), uuid.uuid4()
    app_id = await keys.application_for_key(deps.db, key)
    assert app_id is not None
    await tasks.create_task(deps.db, task_id=task_id, app_id=app_id, user_id=uid, provider="garmin",
                              mode="sync", data_types=["data_247"], params={})  # fmt: skip
    row = await connections.get_active_connection(deps.db, uid, "garmin")
    assert row is not None
    connection = Connection.from_row(row, deps.settings.cipher())
    config = garmin.PROVIDER.settings(deps.settings)
    credentials = Credentials(garmin.PROVIDER, config, uid, connection.access_token, connection.refresh_token,
                              connection.expires_at, deps.db, deps.http)  # fmt: skip
    return StoredContext(task_id=task_id, started_at=datetime.now(UTC), data_type=DataType.DATA_247,
                         params=SyncParams(), connection=connection, config=config, http=deps.http, db=deps.db,
                         credentials=credentials, provider=garmin.PROVIDER,
                         bucket=garmin.PROVIDER.bucket(deps.settings))  # fmt: skip


async def pull_all(ctx: SyncContext[garmin.GarminSettings], api_url: str, start: int, end: int) -> dict[str, int]:
    """Activities, dailies and epochs one callback URL per day, as pings bring them; sleeps and
    HRV as one upload range, which the client cuts into days."""
    pulled = Counter[str]()
    for kind in ("activities", "dailies", "epochs"):
        for s in range(start, end, DAY):
            url = f"{api_url}/wellness-api/rest/{kind}?uploadStartTimeInSeconds={s}&uploadEndTimeInSeconds={s + DAY}"
            pulled[kind] += await garmin.pull_summaries(ctx, kind, url)
    for kind in ("sleeps", "hrv"):
        pulled[kind] += await garmin.pull_summaries(ctx, kind, (start, end))
    return dict(pulled)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# Our column -> the Garmin field it holds, compared one by one (a missing field: NULL).
WORKOUT_FIELDS = {"name": "activityName", "provider_sport": "activityType", "duration_s": "durationInSeconds",
                  "distance_m": "distanceInMeters", "energy_kcal": "activeKilocalories", "steps": "steps",
                  "avg_hr": "averageHeartRateInBeatsPerMinute", "max_hr": "maxHeartRateInBeatsPerMinute",
                  "avg_speed_mps": "averageSpeedInMetersPerSecond", "max_speed_mps": "maxSpeedInMetersPerSecond",
                  "ascent_m": "totalElevationGainInMeters", "descent_m": "totalElevationLossInMeters",
                  "device_name": "deviceName", "min_hr": "-", "avg_power_w": "-"}  # fmt: skip
SLEEP_FIELDS = {"deep_s": "deepSleepDurationInSeconds",
                "light_s": "lightSleepDurationInSeconds", "rem_s": "remSleepInSeconds",
                "awake_s": "awakeDurationInSeconds", "respiratory_rate": "-", "avg_hr": "-"}  # fmt: skip


def assert_timed_rows(
    rows: dict[str, asyncpg.Record], served: list[dict[str, Any]], offset_minutes: int, end: Any
) -> None:
    """Workouts or sleeps: same ids, raw as served, start, end (`end(summary)`), the user's UTC offset."""
    assert set(rows) == {s["summaryId"] for s in served}
    for s in served:
        row = rows[s["summaryId"]]
        assert row["raw"] == s
        assert row["start_time"] == at(s["startTimeInSeconds"])
        assert row["end_time"] == at(end(s))
        assert row["utc_offset_minutes"] == offset_minutes


def night_end(s: dict[str, Any]) -> int:
    """A night ends with its last stage, awake ones included; without stages, after the time
    asleep (durationInSeconds) and awake."""
    stages = [x["endTimeInSeconds"] for xs in s.get("sleepLevelsMap", {}).values() for x in xs]
    asleep_then_awake = s["startTimeInSeconds"] + s["durationInSeconds"] + s["awakeDurationInSeconds"]
    return int(max(stages) if stages else asleep_then_awake)


def assert_workouts(rows: dict[str, asyncpg.Record], activities: list[dict[str, Any]], offset_minutes: int) -> None:
    assert_timed_rows(rows, activities, offset_minutes, lambda a: a["startTimeInSeconds"] + a["durationInSeconds"])
    for a in activities:
        row = rows[a["summaryId"]]
        assert row["sport"] == SPORTS.get(a["activityType"], "other")
        assert {c: row[c] for c in WORKOUT_FIELDS} == {c: a.get(name) for c, name in WORKOUT_FIELDS.items()}
        cadence = a.get("averageRunCadenceInStepsPerMinute") or a.get("averageBikeCadenceInRoundsPerMinute")
        assert row["avg_cadence"] == cadence


def assert_sleeps(rows: dict[str, asyncpg.Record], sleeps: list[dict[str, Any]], offset_minutes: int) -> None:
    assert_timed_rows(rows, sleeps, offset_minutes, night_end)
    for s in sleeps:
        row = rows[s["summaryId"]]
        assert {c: row[c] for c in SLEEP_FIELDS} == {c: s.get(name) for c, name in SLEEP_FIELDS.items()}
        assert row["duration_s"] == night_end(s) - s["startTimeInSeconds"]  # the night, awake time included
        assert row["duration_s"] > s["durationInSeconds"]  # which is the time asleep
        assert row["score"] == (s["overallSleepScore"]["value"] if "overallSleepScore" in s else None)
        assert row["is_nap"] is False


def expected_samples(dailies: list[dict[str, Any]], epochs: list[dict[str, Any]]) -> dict[tuple[str, datetime], float]:
    expected: dict[tuple[str, datetime], float] = {}
    for d in dailies:
        for offset, bpm in d.get("timeOffsetHeartRateSamples", {}).items():
            expected[("heart_rate", at(d["startTimeInSeconds"] + int(offset)))] = bpm
    for e in epochs:
        slot = at(e["startTimeInSeconds"])
        expected[("steps", slot)] = expected.get(("steps", slot), 0) + e["steps"]
        expected[("energy", slot)] = expected.get(("energy", slot), 0) + e["activeKilocalories"]
    return expected


async def assert_stored(
    db: asyncpg.Pool, uid: uuid.UUID, expected: dict[str, list[dict[str, Any]]], offset_minutes: int
) -> None:
    """The user's rows are exactly the `expected` summaries (by type), field by field."""
    workouts = {r["provider_record_id"]: r for r in await db.fetch("SELECT * FROM workouts WHERE user_id = $1", uid)}
    assert_workouts(workouts, expected["activities"], offset_minutes)
    sleeps = {
        r["provider_record_id"]: r for r in await db.fetch("SELECT * FROM sleep_sessions WHERE user_id = $1", uid)
    }
    assert_sleeps(sleeps, expected["sleeps"], offset_minutes)

    recoveries = await db.fetch("SELECT * FROM recoveries WHERE user_id = $1 ORDER BY recorded_at", uid)
    assert [(r["provider_record_id"], r["recorded_at"], r["hrv_rmssd_ms"], r["utc_offset_minutes"], r["raw"])
            for r in recoveries] == [
        (h["summaryId"], at(h["startTimeInSeconds"] + h["durationInSeconds"]), h["lastNightAvg"], offset_minutes, h)
        for h in sorted(expected["hrv"], key=lambda h: h["startTimeInSeconds"] + h["durationInSeconds"])
    ]  # fmt: skip
    daily = await db.fetch("SELECT * FROM daily_activity WHERE user_id = $1 ORDER BY day", uid)
    assert [(r["provider_record_id"], r["day"], r["steps"], r["distance_m"], r["active_energy_kcal"],
             r["energy_kcal"], r["raw"]) for r in daily] == [
        (d["calendarDate"], date.fromisoformat(d["calendarDate"]), d["steps"], d["distanceInMeters"],
         d["activeKilocalories"], d["activeKilocalories"] + d["bmrKilocalories"] if "bmrKilocalories" in d else None, d)
        for d in sorted(expected["dailies"], key=lambda d: d["calendarDate"])
    ]  # fmt: skip
    samples = await db.fetch("SELECT sample_type, recorded_at, value FROM samples WHERE user_id = $1", uid)
    assert {(r["sample_type"], r["recorded_at"]): r["value"] for r in samples} == expected_samples(
        expected["dailies"], expected["epochs"]
    )


async def snapshot(db: asyncpg.Pool) -> dict[str, tuple[Any, ...]]:
    """(rows, newest row version) of every data table: a rewrite shows as a new xmin."""
    tables = ("workouts", "sleep_sessions", "recoveries", "daily_activity", "samples")
    rows = {t: await db.fetchrow(f"SELECT count(*), max(xmin::text::bigint) FROM {t}") for t in tables}
    return {t: tuple(row) if row is not None else () for t, row in rows.items()}


async def test_pulled_summaries_land_field_by_field(
    client: Client, factory: Factory, deps: Deps, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    sim_user = f"g{uuid.uuid4().hex[:8]}"
    sim_state.provider("garmin").user_history[sim_user] = {"workouts": 30, "days_247": 10}
    key, user_id, _ = await factory.connected_user("garmin", sim_user)
    served = await sim_records(sim_server, "garmin", sim_user)
    anchor = int(sim_state.anchor.timestamp())
    # The last 7 days, and uploads since midnight: 8 windows of 5 types, twice, fit the rate limit.
    start, end = anchor - 7 * DAY, anchor + DAY

    def uploaded(kind: str) -> list[dict[str, Any]]:
        return [s for s in served[kind] if start <= served["uploads"][kind][s["summaryId"]] < end]

    expected = {kind: uploaded(kind) for kind in ("activities", "dailies", "epochs", "sleeps", "hrv")}
    assert 0 < len(expected["activities"]) < len(served["activities"])  # the range matters
    ctx = await pull_context(deps, key, user_id)
    assert await garmin.fetch_user_id(ctx) == served["userId"]
    api = garmin.PROVIDER.settings(deps.settings).api_url
    assert await pull_all(ctx, api, start, end) == {k: len(v) for k, v in expected.items()}

    await assert_stored(db, uuid.UUID(user_id), expected, served["offset_seconds"] // 60)

    assert ctx.task_id is not None
    task = await tasks.get_task(db, ctx.task_id)
    assert task is not None
    progress = task["progress"]["data_247"]
    assert progress["pages"] == 5 * 8
    assert progress["records"]["workouts"] == len(expected["activities"])
    assert progress["records"]["recovery"] == len(expected["hrv"])

    # Pulled again (another ping for the same uploads): nothing new, nothing rewritten.
    before = await snapshot(db)
    await pull_all(await pull_context(deps, key, user_id), garmin.PROVIDER.settings(deps.settings).api_url, start, end)
    assert await snapshot(db) == before


async def test_a_rerun_skips_pulled_pages(
    client: Client, factory: Factory, deps: Deps, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("garmin")
    uploads = (await sim_records(sim_server, "garmin", sim_user))["uploads"]["dailies"].values()
    start = int(sim_state.anchor.timestamp()) - 3 * DAY
    ctx = await pull_context(deps, key, user_id)
    first = await garmin.pull_summaries(ctx, "dailies", (start, start + 2 * DAY))
    assert first == len([t for t in uploads if start <= t < start + 2 * DAY])
    assert ctx.task_id is not None
    task = await tasks.get_task(db, ctx.task_id)
    assert task is not None
    ctx.done = task["progress"]["data_247"]["done"]
    sim_state.requests.clear()
    # A rerun of the task asks only for the day it has not stored yet.
    third = await garmin.pull_summaries(ctx, "dailies", (start, start + 3 * DAY))
    assert third == len([t for t in uploads if start + 2 * DAY <= t < start + 3 * DAY])
    assert [int(r["query"]["uploadStartTimeInSeconds"]) for r in sim_state.requests] == [start + 2 * DAY]
    assert await db.fetchval("SELECT count(*) FROM daily_activity") == first + third


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example{path}/wellness-api/rest/dailies?uploadStartTimeInSeconds=0&uploadEndTimeInSeconds=86400",
        "http://localhost:{port}{path}/wellness-api/rest/dailies",  # the same server by another name
        "{api}/../../strava/api/wellness-api/rest/dailies",
        "{api}/wellness-api/rest/sleeps?uploadStartTimeInSeconds=0&uploadEndTimeInSeconds=86400",
    ],
)
async def test_a_callback_url_off_the_garmin_api_is_refused(
    client: Client, factory: Factory, deps: Deps, sim_state: SimState, url: str
) -> None:
    key, user_id, _ = await factory.connected_user("garmin")
    ctx = await pull_context(deps, key, user_id)
    sim_state.requests.clear()
    api = URL(garmin.PROVIDER.settings(deps.settings).api_url)
    url = url.format(api=api, path=api.path, port=api.port)
    with pytest.raises(ProviderError, match="refusing Garmin callback URL"):
        await garmin.pull_summaries(ctx, "dailies", url)
    assert sim_state.requests == []  # the token went nowhere
