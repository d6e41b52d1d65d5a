"""Polar's 24/7 data end to end: a data_type=247 sync (API -> arq -> worker -> simulator over a
socket -> PostgreSQL) and the SLEEP, ACTIVITY_SUMMARY and CONTINUOUS_HEART_RATE webhook events.

Expected rows are computed here from what the simulator says it serves, apart from the client's
mapping code, and compared field by field."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, sim_records, start_sync, wait_for_task
from tests.helpers import settled
from tests.test_polar_webhooks import URL, emit, polar_calls, registered_user
from wearsync.dev import SIM_WEBHOOK_SECRET
from wearsync.sim.common import SimState, WebhookTarget

Client = TestClient[web.Request, web.Application]
LISTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/v3/users/sleep", {}),
    ("GET", "/v3/users/nightly-recharge", {}),
    ("GET", "/v3/users/activities", {}),
]


@pytest.fixture
def target(client: Client, sim_state: SimState) -> None:
    sim_state.webhook_targets["polar"] = WebhookTarget(str(client.make_url(URL)), SIM_WEBHOOK_SECRET)


def night_offset(night: dict[str, Any]) -> int:
    offset = datetime.fromisoformat(night["sleep_start_time"]).utcoffset()
    assert offset is not None
    return int(offset.total_seconds() // 60)


def expected_heart_rate(served: dict[str, Any], days: list[str]) -> dict[datetime, float]:
    """Local sample times on the date, shifted by the offset of that date's night."""
    expected = {}
    for day in days:
        hr = served["heart_rate"].get(day)
        if hr is None:
            continue
        offset = timedelta(minutes=night_offset(served["nights"][day]))
        for s in hr["heart_rate_samples"]:
            at = datetime.combine(date.fromisoformat(day), time.fromisoformat(s["sample_time"]), UTC) - offset
            expected[at] = float(s["heart_rate"])
    return expected


async def assert_nights(db: asyncpg.Pool, served: dict[str, Any], dates: list[str]) -> None:
    rows = {r["provider_record_id"]: r for r in await db.fetch("SELECT * FROM sleep_sessions")}
    assert set(rows) == set(dates)
    for day in dates:
        n, row = served["nights"][day], rows[day]
        start, end = datetime.fromisoformat(n["sleep_start_time"]), datetime.fromisoformat(n["sleep_end_time"])
        assert (row["start_time"], row["end_time"], row["utc_offset_minutes"]) == (start, end, night_offset(n))
        assert row["duration_s"] == (end - start).total_seconds()
        assert (row["deep_s"], row["light_s"], row["rem_s"]) == (n["deep_sleep"], n["light_sleep"], n["rem_sleep"])
        assert (row["awake_s"], row["score"], row["raw"]) == (n["total_interruption_duration"], n["sleep_score"], n)


async def assert_recharges(db: asyncpg.Pool, served: dict[str, Any], dates: list[str]) -> None:
    rows = {r["provider_record_id"]: r for r in await db.fetch("SELECT * FROM recoveries")}
    assert set(rows) == set(dates)
    for day in dates:
        r, row = served["recharges"][day], rows[day]
        assert row["recorded_at"] == datetime.combine(date.fromisoformat(day), time(), UTC)
        assert (row["resting_hr"], row["hrv_rmssd_ms"]) == (r["heart_rate_avg"], r["heart_rate_variability_avg"])
        assert (row["score"], row["raw"]) == (None, r)


async def assert_activities(db: asyncpg.Pool, served: dict[str, Any], dates: list[str]) -> None:
    rows = {r["provider_record_id"]: r for r in await db.fetch("SELECT * FROM daily_activity")}
    assert set(rows) == set(dates)
    for day in dates:
        a, row = served["activities"][day], rows[day]
        assert (row["day"], row["steps"], row["raw"]) == (date.fromisoformat(day), a["steps"], a)
        assert (row["energy_kcal"], row["active_energy_kcal"]) == (a["calories"], a["active_calories"])
        assert row["distance_m"] == a["distance_from_steps"]


async def test_a_247_sync_stores_sleep_recharge_activity_and_heart_rate_and_the_next_starts_where_it_ended(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("polar")
    sim_state.requests.clear()
    task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, "data_type=247"))
    assert task["status"] == "succeeded", task
    assert task["result"] == {"data_247": True}

    served = await sim_records(sim_server, "polar", sim_user)
    today = task["started_at"][:10]
    asked = [(date.fromisoformat(today) - timedelta(days=i)).isoformat() for i in range(27, -1, -1)]
    calls = polar_calls(sim_state)
    assert calls == [*LISTS, *[("GET", f"/v3/users/continuous-heart-rate/{d}", {}) for d in asked]]
    await assert_nights(db, served, sorted(served["nights"]))
    await assert_recharges(db, served, sorted(served["recharges"]))
    await assert_activities(db, served, sorted(served["activities"]))
    stored = {r["recorded_at"]: r["value"] for r in await db.fetch("SELECT recorded_at, value FROM samples")}
    expected = expected_heart_rate(served, asked)
    assert len(expected) > 20 * 288  # most days asked have data, the newest may have none (404)
    assert stored == expected
    progress = task["progress"]["data_247"]
    assert progress["records"] == {"sleep": 28, "recovery": 28, "daily_activity": 28, "samples": len(expected)}
    assert (progress["pages"], progress["pages_total"]) == (3 + 28, 3 + 28)

    # The next sync lists again and fetches heart rate from the last day fetched (it may have grown).
    sim_state.requests.clear()
    task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, "data_type=247"))
    assert task["status"] == "succeeded", task
    newest = task["started_at"][:10]
    days = [d for d in [today, newest] if d >= today]
    assert polar_calls(sim_state) == [*LISTS, *[("GET", f"/v3/users/continuous-heart-rate/{d}", {})
                                                 for d in sorted(set(days))]]  # fmt: skip


async def test_strava_still_answers_501_for_247_and_polar_all_syncs_both(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool
) -> None:
    key, user_id, _ = await factory.connected_user("polar")
    resp = await client.post(f"/api/v1/polar/users/{user_id}/sync?async=false&data_type=all",
                             headers={"X-API-Key": key})  # fmt: skip
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["details"] == {"workouts": True, "data_247": True}
    assert await db.fetchval("SELECT count(*) FROM workouts") == 40
    assert await db.fetchval("SELECT count(*) FROM sleep_sessions") == 28
    strava_key, strava_user, _ = await factory.connected_user("strava")
    resp = await client.post(f"/api/v1/strava/users/{strava_user}/sync?data_type=247",
                             headers={"X-API-Key": strava_key})  # fmt: skip
    assert resp.status == 501


@pytest.mark.usefixtures("target")
@pytest.mark.parametrize("kind", ["sleep", "activity_summary", "continuous_heart_rate"])
async def test_a_247_event_fetches_its_date_from_our_api_and_stores_it(
    kind: str,
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState,
) -> None:  # fmt: skip
    _, sim_user, polar_id = await registered_user(factory, sim_state)
    emitted = await emit(sim_server, sim_user, {"kind": kind})
    assert emitted["delivery_status"] == 200
    (stored,) = await settled(db, 1)
    assert (stored["status"], stored["kind"], stored["provider_user_id"]) == ("processed", kind.upper(), str(polar_id))
    day = emitted["event"]["date"]
    served = await sim_records(sim_server, "polar", sim_user)
    if kind == "sleep":
        assert polar_calls(sim_state) == [("GET", f"/v3/users/sleep/{day}", {}),
                                          ("GET", f"/v3/users/nightly-recharge/{day}", {})]  # fmt: skip
        await assert_nights(db, served, [day])
        await assert_recharges(db, served, [day])
    elif kind == "activity_summary":
        assert polar_calls(sim_state) == [("GET", f"/v3/users/activities/{day}", {})]
        await assert_activities(db, served, [day])
    else:
        assert polar_calls(sim_state) == [("GET", f"/v3/users/continuous-heart-rate/{day}", {})]
        # No sleep of that date stored yet: its local times are read as UTC.
        stored_hr = {r["recorded_at"]: r["value"] for r in await db.fetch("SELECT recorded_at, value FROM samples")}
        day_hr = served["heart_rate"][day]["heart_rate_samples"]
        assert stored_hr == {
            datetime.combine(date.fromisoformat(day), time.fromisoformat(s["sample_time"]), UTC): s["heart_rate"]
            for s in day_hr
        }


@pytest.mark.usefixtures("target")
async def test_a_247_event_for_a_date_polar_has_nothing_for_stores_nothing(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    _, sim_user, _ = await registered_user(factory, sim_state)
    sim_state.provider("polar").user_history[sim_user] = {"days_247": 0}
    await emit(sim_server, sim_user, {"kind": "sleep"})
    await emit(sim_server, sim_user, {"kind": "activity_summary"})
    events = await settled(db, 2)
    assert [e["status"] for e in events] == ["processed", "processed"]
    assert await db.fetchval("SELECT count(*) FROM sleep_sessions") == 0
    assert await db.fetchval("SELECT count(*) FROM daily_activity") == 0
    assert events[0]["detail"].endswith("(sleep, nightly-recharge): not stored"), events[0]["detail"]
    assert events[1]["detail"].endswith("(activities): not stored"), events[1]["detail"]
