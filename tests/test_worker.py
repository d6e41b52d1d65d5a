"""End to end: API -> arq on Redis -> worker -> Suunto simulator over a socket -> PostgreSQL.

Expected rows are computed here from what the simulator says it serves, independently of the
client's mapping code, and compared field by field."""

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, sim_records, start_sync, wait_for_task
from wearsync.deps import Deps
from wearsync.sim.common import Fault, SimState
from wearsync.sync import run_task
from wearsync.worker import sync_task

Client = TestClient[web.Request, web.Application]
SPORTS = {0: "walking", 1: "running", 2: "cycling", 3: "cross_country_skiing", 10: "mountain_biking", 11: "hiking",
          21: "swimming", 22: "trail_running", 23: "strength_training", 51: "yoga", 52: "indoor_cycling"}  # fmt: skip


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def expected_samples(activity: list[dict[str, Any]]) -> dict[tuple[str, datetime], float]:
    expected = {}
    for entry in activity:
        at = datetime.fromisoformat(entry["timestamp"]).astimezone(UTC)
        data = entry["entryData"]
        expected[("heart_rate", at)] = data["HR"]
        expected[("steps", at)] = data["StepCount"]
        expected[("energy", at)] = data["EnergyConsumption"] / 4184
        if "SpO2" in data:
            expected[("spo2", at)] = data["SpO2"] * 100
        if data.get("HRV"):
            expected[("hrv_rmssd", at)] = data["HRV"]
    return expected


async def assert_everything_stored(db: asyncpg.Pool, user_id: str, served: dict[str, Any]) -> None:
    uid = uuid.UUID(user_id)
    workouts = {r["provider_record_id"]: r for r in await db.fetch("SELECT * FROM workouts WHERE user_id = $1", uid)}
    assert len(workouts) == len(served["workouts"])
    for w in served["workouts"]:
        row = workouts[w["workoutKey"]]
        start = ms(w["startTime"])
        assert row["provider"] == "suunto"
        assert row["raw"] == w
        assert row["sport"] == SPORTS.get(w["activityId"], "other")
        assert row["start_time"] == start
        assert row["end_time"] == (ms(w["stopTime"]) if "stopTime" in w else start + timedelta(seconds=w["totalTime"]))
        assert row["utc_offset_minutes"] == w["timeOffsetInMinutes"]
        assert row["duration_s"] == w["totalTime"]
        assert row["distance_m"] == w["totalDistance"]
        assert row["energy_kcal"] == w["energyConsumption"]
        assert row["steps"] == w["stepCount"]
        assert row["avg_speed_mps"] == w["avgSpeed"]
        assert row["max_speed_mps"] == w["maxSpeed"]
        assert row["ascent_m"] == w["totalAscent"]
        assert row["avg_power_w"] == w.get("avgPower")
        assert row["max_power_w"] == w.get("maxPower")
        assert row["name"] == w["name"]
        hr = w.get("hrdata", {})  # documented workoutAvgHR / workoutMaxHR; never userMaxHR or max
        assert (row["avg_hr"], row["max_hr"], row["min_hr"]) == (
            hr.get("workoutAvgHR"),
            hr.get("workoutMaxHR"),
            hr.get("min"),
        )
        cadence = w.get("cadence", {})  # an object, or avgCadence / maxCadence
        assert (row["avg_cadence"], row["max_cadence"]) == (
            w.get("avgCadence", cadence.get("avg")),
            w.get("maxCadence", cadence.get("max")),
        )
        summary = [e["gear"] for e in w["extensions"] if e["type"] == "SummaryExtension"]
        device = w.get("gear") or (summary[0] if summary else None)
        assert row["device_name"] == (device["displayName"] if device else None)

    sleeps = {
        r["provider_record_id"]: r for r in await db.fetch("SELECT * FROM sleep_sessions WHERE user_id = $1", uid)
    }
    assert len(sleeps) == len(served["sleep"])
    for s in served["sleep"]:
        data, row = s["entryData"], sleeps[str(s["entryData"]["SleepId"])]
        assert row["start_time"] == datetime.fromisoformat(data["BedtimeStart"])
        assert row["end_time"] == datetime.fromisoformat(data["BedtimeEnd"])
        assert row["duration_s"] == data["Duration"]
        assert row["deep_s"] == data["DeepSleepDuration"]
        assert row["rem_s"] == data["REMSleepDuration"]
        awake = data["Duration"] - data["DeepSleepDuration"] - data["LightSleepDuration"] - data["REMSleepDuration"]
        assert row["awake_s"] == awake
        assert row["is_nap"] == data["IsNap"]
        assert row["min_hr"] == data["HRMin"]
        assert row["spo2_percent"] == data["MaxSpo2"] * 100
        assert row["utc_offset_minutes"] == served["offset_minutes"]

    recoveries = await db.fetch("SELECT * FROM recoveries WHERE user_id = $1 ORDER BY recorded_at", uid)
    assert [(r["recorded_at"], r["score"]) for r in recoveries] == [
        (datetime.fromisoformat(e["timestamp"]), e["entryData"]["Balance"] * 100) for e in served["recovery"]
    ]

    samples = await db.fetch("SELECT sample_type, recorded_at, value FROM samples WHERE user_id = $1", uid)
    stored = {(r["sample_type"], r["recorded_at"]): r["value"] for r in samples}
    assert stored == expected_samples(served["activity"])

    daily = await db.fetch("SELECT day, steps, energy_kcal FROM daily_activity WHERE user_id = $1 ORDER BY day", uid)
    served_daily = {stat["Name"]: stat["Sources"][0]["Samples"] for stat in served["daily"]}
    steps = {s["TimeISO8601"][:10]: s["Value"] for s in served_daily["stepcount"]}
    joules = {s["TimeISO8601"][:10]: s["Value"] for s in served_daily["energyconsumption"]}
    assert None in steps.values(), "a day without data is served as null"
    assert [(r["day"], r["steps"], r["energy_kcal"]) for r in daily] == [
        (date.fromisoformat(d), steps[d], joules[d] / 4184) for d in sorted(steps) if steps[d] is not None
    ]


async def test_async_sync_lands_every_served_record(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    task_id = await start_sync(client, key, "suunto", user_id)
    task = await wait_for_task(client, key, task_id)

    assert task["status"] == "succeeded", task
    assert task["result"] == {"workouts": True, "data_247": True}
    assert task["error"] is None
    assert (task["provider"], task["user_id"], task["mode"]) == ("suunto", user_id, "async")
    assert task["started_at"]
    assert task["finished_at"]
    assert task["duration_s"] >= 0
    served = await sim_records(sim_server, "suunto", sim_user)
    await assert_everything_stored(db, user_id, served)

    workouts, d247 = task["progress"]["workouts"], task["progress"]["data_247"]
    assert workouts["status"] == d247["status"] == "succeeded"
    assert workouts["records"] == {"workouts": len(served["workouts"])}
    assert workouts["pages"] == -(-len(served["workouts"]) // 50)  # default limit 50
    assert d247["pages"] == d247["pages_total"] == 4 * 4  # 90 days: 4 windows of <= 28 days, 4 endpoints
    assert d247["records"]["sleep"] == len(served["sleep"])
    assert d247["records"]["samples"] == len(expected_samples(served["activity"]))


async def test_async_job_honours_every_parameter(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    served = await sim_records(sim_server, "suunto", sim_user)
    starts = sorted(w["startTime"] for w in served["workouts"])
    since = starts[len(starts) // 2] // 1000 + 1  # the newer half, by start time
    query = f"data_type=workouts&since={since}&limit=7&offset=3&filter_by_modification_time=false"
    task = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id, query))

    assert task["status"] == "succeeded"
    assert task["data_types"] == ["workouts"]
    assert task["params"] == {"since": since, "limit": 7, "offset": 3, "filter_by_modification_time": False}
    calls = [r for r in sim_state.requests if r["path"] == "/v3/workouts/"]
    assert {(c["query"]["since"], c["query"]["limit"], c["query"]["filter-by-modification-time"]) for c in calls} == {
        (str(since * 1000), "7", "false")
    }
    assert min(int(c["query"]["offset"]) for c in calls) == 3
    newer = [w for w in served["workouts"] if w["startTime"] >= since * 1000]
    assert await db.fetchval("SELECT count(*) FROM workouts") == len(newer) - 3
    assert not [r for r in sim_state.requests if r["path"].startswith("/247")]


async def test_a_failing_data_type_leaves_the_task_partial_with_the_other_stored(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.faults.append(Fault("suunto", "/247samples/sleep", "status", 500, count=-1))
    task = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id))

    assert task["status"] == "partial"
    assert task["result"] == {"workouts": True, "data_247": False}
    assert task["error"].startswith("data_247: GET ")
    assert "/247samples/sleep failed: HTTP 500" in task["error"]
    assert task["progress"]["data_247"]["status"] == "failed"
    assert task["progress"]["workouts"]["status"] == "succeeded"
    served = await sim_records(sim_server, "suunto", sim_user)
    assert await db.fetchval("SELECT count(*) FROM workouts") == len(served["workouts"])
    assert await db.fetchval("SELECT count(*) FROM sleep_sessions") == 0


async def test_job_runs_again_safely(client: Client, factory: Factory, deps: Deps, db: asyncpg.Pool) -> None:
    """arq runs a job at least once: a rerun of an interrupted task completes it without
    duplicates, and a rerun of a finished task does nothing."""
    key, user_id, _ = await factory.connected_user("suunto")
    task_id = uuid.UUID(await start_sync(client, key, "suunto", user_id, "data_type=workouts"))
    await run_task(deps, task_id)
    count = await db.fetchval("SELECT count(*) FROM workouts")
    await db.execute("UPDATE sync_tasks SET status = 'running' WHERE id = $1", task_id)  # as if the worker died
    assert await sync_task({"deps": deps, "job_try": 2}, str(task_id)) == {"workouts": True}
    assert await db.fetchval("SELECT count(*) FROM workouts") == count
    assert await db.fetchval("SELECT attempts FROM sync_tasks WHERE id = $1", task_id) == 2
    assert await sync_task({"deps": deps, "job_try": 3}, str(task_id)) is None


async def test_connection_removed_before_the_job_runs_fails_the_task(
    client: Client, factory: Factory, deps: Deps
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    task_id = await start_sync(client, key, "suunto", user_id)  # no worker runs: the job waits in the queue
    await client.delete(f"/api/v1/users/{user_id}/connections/suunto", headers={"X-API-Key": key})
    assert await run_task(deps, uuid.UUID(task_id)) == {"workouts": False, "data_247": False}
    task = await wait_for_task(client, key, task_id)
    assert (task["status"], task["error"]) == ("failed", "No active connection found for provider")
