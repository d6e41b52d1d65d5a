"""Suunto notifications end to end, in the shapes Suunto documents (sim/fixtures/suunto): the
simulator (or a test) notifies our receiver over a socket, the worker stores the embedded workout,
fetches one that is not embedded by its key, or syncs the window a 24/7 notification covers,
from the simulator into PostgreSQL."""

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, sim_event, sim_records, start_sync, wait_for_task
from tests.helpers import settled
from tests.test_webhooks import STORED_ALREADY, signed
from wearsync.dev import SIM_WEBHOOK_SECRET
from wearsync.sim.common import SimState, WebhookTarget, fixture

Client = TestClient[web.Request, web.Application]
URL = "/api/v1/webhooks/suunto"


async def emit(sim_server: TestServer, user: str, body: dict[str, Any]) -> dict[str, Any]:
    return await sim_event(sim_server, "suunto", user, body)


async def notified_user(client: Client, factory: Factory, sim_state: SimState) -> tuple[str, str]:
    """(user id, simulated user) of a connected user whose notifications reach our receiver."""
    _, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.webhook_targets["suunto"] = WebhookTarget(str(client.make_url(URL)), SIM_WEBHOOK_SECRET)
    sim_state.requests.clear()
    return user_id, sim_user


def data_calls(sim_state: SimState) -> list[str]:
    return [str(r["path"]) for r in sim_state.requests if r["provider"] == "suunto" and r["status"] == 200]


async def test_the_documented_notification_lands_the_workout_with_its_gear(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool
) -> None:
    """The body of Suunto's webhooks page, as it is (its username ours): no workoutid, the workout
    inside, gear beside it."""
    _, user_id, sim_user = await factory.connected_user("suunto")
    documented = fixture("suunto", "webhook_workout_created") | {"username": sim_user}
    body, headers = signed(documented)
    resp = await client.post(URL, data=body, headers=headers)
    assert (resp.status, await resp.json()) == (200, {"received": 1, "new": 1})
    (event,) = await settled(db, 1)
    assert (event["status"], event["kind"]) == ("processed", "workout.workout_created")
    row = await db.fetchrow("SELECT * FROM workouts WHERE user_id = $1", uuid.UUID(user_id))
    assert row is not None
    assert (row["provider_record_id"], row["sport"], row["device_name"]) == (
        "67604889401b942184624cb8",
        "cross_country_skiing",
        "Suunto Vertical",
    )
    assert (row["avg_hr"], row["max_hr"], row["energy_kcal"], row["steps"]) == (145, 175, 500, 8500)
    assert row["raw"] == documented["workout"]


async def test_a_notification_without_the_workout_is_fetched_by_its_key(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    user_id, sim_user = await notified_user(client, factory, sim_state)
    emitted = await emit(sim_server, sim_user, {"kind": "create", "embedded": False})
    assert emitted["delivery_status"] == 200
    assert "workout" not in emitted["notification"]
    (event,) = await settled(db, 1)
    assert event["status"] == "processed", event["detail"]
    key = emitted["notification"]["workoutid"]
    assert data_calls(sim_state) == [f"/v3/workouts/{key}"]
    served = next(w for w in (await sim_records(sim_server, "suunto", sim_user))["workouts"] if w["workoutKey"] == key)
    row = await db.fetchrow("SELECT * FROM workouts WHERE user_id = $1", uuid.UUID(user_id))
    assert row is not None
    # Fetched alone, the workout names itself `key` (as documented for one workout).
    assert row["raw"] == {"key": key} | {k: v for k, v in served.items() if k != "workoutKey"}
    assert (row["provider_record_id"], row["duration_s"]) == (key, served["totalTime"])
    assert row["avg_hr"] == (served["hrdata"]["workoutAvgHR"] if "hrdata" in served else None)


async def test_a_simulated_workout_notification_carries_its_gear_beside_it(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    user_id, sim_user = await notified_user(client, factory, sim_state)
    emitted = await emit(sim_server, sim_user, {"kind": "create"})
    notification = emitted["notification"]
    assert set(notification) <= set(fixture("suunto", "webhook_workout_created"))
    (event,) = await settled(db, 1)
    assert event["status"] == "processed", event["detail"]
    assert data_calls(sim_state) == []  # carried: nothing to fetch
    row = await db.fetchrow("SELECT device_name, raw FROM workouts WHERE user_id = $1", uuid.UUID(user_id))
    assert row is not None
    assert row["raw"] == notification["workout"]
    assert row["device_name"] == (notification["gear"]["name"] if "gear" in notification else None)


async def test_a_247_sleep_notification_syncs_the_sleep_of_its_window(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    user_id, sim_user = await notified_user(client, factory, sim_state)
    emitted = await emit(sim_server, sim_user, {"kind": "sleep"})
    samples = emitted["notification"]["samples"]
    assert emitted["notification"]["type"] == "SUUNTO_247_SLEEP_CREATED"
    assert samples
    (event,) = await settled(db, 1)
    assert (event["status"], event["kind"]) == ("processed", "data_247.suunto_247_sleep_created"), event["detail"]
    assert set(data_calls(sim_state)) == {"/247samples/sleep"}
    rows = await db.fetch("SELECT provider_record_id FROM sleep_sessions WHERE user_id = $1", uuid.UUID(user_id))
    assert sorted(r["provider_record_id"] for r in rows) == sorted(str(s["entryData"]["SleepId"]) for s in samples)
    assert await db.fetchval("SELECT count(*) FROM workouts") == 0


async def test_a_247_activity_notification_syncs_samples_and_daily_statistics(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    user_id, sim_user = await notified_user(client, factory, sim_state)
    emitted = await emit(sim_server, sim_user, {"kind": "activity"})
    samples = emitted["notification"]["samples"]
    (event,) = await settled(db, 1)
    assert event["status"] == "processed", event["detail"]
    assert sorted(data_calls(sim_state)) == ["/247/daily-activity-statistics", "/247samples/activity"]
    uid = uuid.UUID(user_id)
    times = {datetime.fromisoformat(s["timestamp"]) for s in samples}
    stored = {r["recorded_at"] for r in await db.fetch("SELECT recorded_at FROM samples WHERE user_id = $1", uid)}
    assert stored == times
    # Each UTC day the samples touch has its daily row, as the simulator serves that day.
    days = await db.fetch("SELECT day, steps FROM daily_activity WHERE user_id = $1 ORDER BY day", uid)
    assert [r["day"] for r in days] == sorted({t.astimezone(UTC).date() for t in times})
    served = {
        s["TimeISO8601"][:10]: s["Value"]
        for stat in (await sim_records(sim_server, "suunto", sim_user))["daily"]
        if stat["Name"] == "stepcount"
        for s in stat["Sources"][0]["Samples"]
    }
    assert [r["steps"] for r in days] == [served[r["day"].isoformat()] for r in days]


async def test_routes_and_unknown_types_are_acknowledged_and_not_stored(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    _, sim_user = await notified_user(client, factory, sim_state)
    assert (await emit(sim_server, sim_user, {"kind": "route"}))["delivery_status"] == 200
    body, headers = signed({"type": "SOMETHING_NEW", "username": sim_user, "thing": {"id": 1}})
    resp = await client.post(URL, data=body, headers=headers)
    assert (resp.status, await resp.json()) == (200, {"received": 0, "new": 0})
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_a_late_notification_of_a_workouts_creation_does_not_revert_a_later_change(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer
) -> None:
    """Suunto's notification carries the workout as created, with no modification time, and may
    come late (Suunto sends it again after a refused try) or be replayed: a sync stored the
    workout since, changed upstream, and the notification must not take it back."""
    key, user_id, sim_user = await factory.connected_user("suunto")  # no webhook registered yet
    emitted = await emit(sim_server, sim_user, {"kind": "create"})
    assert emitted["delivery_status"] == 0
    workout_key = emitted["workout"]["workoutKey"]
    await emit(sim_server, sim_user, {"kind": "update", "workoutKey": workout_key, "changes": {"totalTime": 4321.0}})
    task = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id, "data_type=workouts"))
    assert task["status"] == "succeeded", task
    stored = "SELECT raw FROM workouts WHERE provider_record_id = $1"
    served = [
        w for w in (await sim_records(sim_server, "suunto", sim_user))["workouts"] if w["workoutKey"] == workout_key
    ]
    assert served[0]["totalTime"] == 4321.0
    assert await db.fetchval(stored, workout_key) == served[0]
    body, headers = signed(emitted["notification"])
    assert await (await client.post(URL, data=body, headers=headers)).json() == {"received": 1, "new": 1}
    (event,) = await settled(db, 1)
    assert (event["status"], event["detail"]) == ("processed", STORED_ALREADY)
    assert await db.fetchval(stored, workout_key) == served[0]
    # A notification of a workout not stored yet stores it, as it always did.
    fresh = await emit(sim_server, sim_user, {"kind": "create"})
    body, headers = signed(fresh["notification"])
    assert await (await client.post(URL, data=body, headers=headers)).json() == {"received": 1, "new": 1}
    assert [e["detail"] for e in await settled(db, 2)] == [STORED_ALREADY, None]
    assert await db.fetchval(stored, fresh["workout"]["workoutKey"]) == fresh["notification"]["workout"]
