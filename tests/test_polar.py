"""End to end against the Polar simulator: API -> arq on Redis -> worker -> simulator over a
socket -> PostgreSQL.

Expected rows are computed here from what the simulator says it serves, independently of the
client's mapping code, and compared field by field."""

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, sim_records, start_sync, stored_tokens, wait_for_task
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
SPORTS = {"RUNNING": "running", "ROAD_BIKING": "cycling", "MOUNTAIN_BIKING": "mountain_biking",
          "TREADMILL_RUNNING": "treadmill_running", "INDOOR_CYCLING": "indoor_cycling",
          "STRENGTH_TRAINING": "strength_training", "YOGA": "yoga", "POOL_SWIMMING": "swimming",
          "OPEN_WATER_SWIMMING": "open_water_swimming", "WALKING": "walking", "HIKING": "hiking",
          "CROSS-COUNTRY_SKIING": "cross_country_skiing"}  # fmt: skip
FLAG_FIELDS = {"samples": "samples", "zones": "heart_rate_zones", "route": "route"}
WORKOUTS = "data_type=workouts"  # the tests of exercises; tests/test_polar_247.py syncs the rest
UNIT_SECONDS = {"D": 86400, "H": 3600, "M": 60, "S": 1}


def seconds(iso_duration: str) -> float:
    """An ISO 8601 duration's seconds, read apart from the client's parser."""
    return sum(float(n) * UNIT_SECONDS[unit] for n, unit in re.findall(r"([\d.]+)([DHMS])", iso_duration))


def utc_start(exercise: dict[str, Any]) -> datetime:
    zone = timezone(timedelta(minutes=exercise["start_time_utc_offset"]))
    return datetime.fromisoformat(exercise["start_time"]).replace(tzinfo=zone).astimezone(UTC)


def as_served(exercise: dict[str, Any], flags: set[str]) -> dict[str, Any]:
    hidden = {field for flag, field in FLAG_FIELDS.items() if flag not in flags}
    return {k: v for k, v in exercise.items() if k not in hidden}


def expected_heart_rate(exercises: list[dict[str, Any]]) -> dict[datetime, float]:
    """Heart-rate series as the spec shapes them (`sample-type` "0", `recording-rate`, `data` with
    `null` or empty gaps)."""
    expected = {}
    for e in exercises:
        for series in e["samples"]:
            if series["sample-type"] == "0":
                for i, value in enumerate(series["data"].split(",")):
                    if value not in ("", "null"):
                        expected[utc_start(e) + timedelta(seconds=i * series["recording-rate"])] = float(value)
    return expected


async def assert_exercises_stored(
    db: asyncpg.Pool, user_id: str, served: dict[str, Any], flags: set[str]
) -> dict[str, Any]:
    uid = uuid.UUID(user_id)
    rows = {r["provider_record_id"]: r for r in await db.fetch("SELECT * FROM workouts WHERE user_id = $1", uid)}
    exercises = served["exercises"]
    assert len(rows) == len(exercises) == 40
    for e in exercises:
        row = rows[e["id"]]
        start = utc_start(e)
        assert row["provider"] == "polar"
        assert row["raw"] == as_served(e, flags)
        assert row["sport"] == SPORTS.get(e["detailed_sport_info"], "other")
        assert row["provider_sport"] == e["detailed_sport_info"]
        assert row["start_time"] == start
        assert row["end_time"] == start + timedelta(seconds=seconds(e["duration"]))
        assert row["duration_s"] == seconds(e["duration"])
        assert row["utc_offset_minutes"] == e["start_time_utc_offset"]
        assert row["energy_kcal"] == e["calories"]
        assert row["distance_m"] == e.get("distance")
        hr = e.get("heart_rate") or {}
        assert (row["avg_hr"], row["max_hr"]) == (hr.get("average"), hr.get("maximum"))
        assert row["device_name"] == e["device"]
        assert (row["steps"], row["avg_speed_mps"], row["name"]) == (None, None, None)
    # The simulator serves the edge cases the client must meet.
    assert any(r["sport"] == "other" and r["provider_sport"] == "SLACKLINING" for r in rows.values())
    assert any("heart_rate" not in e for e in exercises)
    assert any("distance" not in e for e in exercises)
    # Older exercises exist upstream but are outside the 30-day window.
    assert served["older_exercises"]
    assert not {e["id"] for e in served["older_exercises"]} & set(rows)
    return rows


async def test_async_sync_without_flags_lands_every_served_exercise(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("polar")
    task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, WORKOUTS))

    assert task["status"] == "succeeded", task
    assert task["result"] == {"workouts": True}
    assert task["error"] is None
    assert task["params"] == {"samples": False, "zones": False, "route": False}
    served = await sim_records(sim_server, "polar", sim_user)
    rows = await assert_exercises_stored(db, user_id, served, set())
    assert not any(set(FLAG_FIELDS.values()) & set(r["raw"]) for r in rows.values())
    assert await db.fetchval("SELECT count(*) FROM samples") == 0
    progress = task["progress"]["workouts"]
    assert (progress["records"], progress["pages"], progress["pages_total"]) == ({"workouts": 40}, 1, 1)

    # Registered first (member-id: our user id; 409: already when connected, which confirmed the
    # account), then one call for the exercises, flags false.
    calls = [(r["method"], r["path"], r["query"], r["status"]) for r in sim_state.requests if r["provider"] == "polar"]
    assert calls[-2:] == [
        ("POST", "/v3/users", {}, 409),
        ("GET", "/v3/exercises", {"samples": "false", "zones": "false", "route": "false"}, 200),
    ]
    assert ("polar", sim_user) in sim_state.registered
    # The token response's x_user_id is the connection's provider user id.
    resp = await client.get(f"/api/v1/users/{user_id}/connections", headers={"X-API-Key": key})
    (connection,) = await resp.json()
    assert connection["provider_user_id"] == str(served["polar_user_id"])


@pytest.mark.parametrize("flags", [{"samples", "zones", "route"}, {"zones"}])
async def test_samples_zones_and_route_flags_are_honoured(
    client: Client,
    factory: Factory,
    worker: Worker,
    sim_server: TestServer,
    sim_state: SimState,
    db: asyncpg.Pool,
    flags: set[str],
) -> None:
    key, user_id, sim_user = await factory.connected_user("polar")
    query = "&".join([WORKOUTS, *(f"{flag}={'true' if flag in flags else 'false'}" for flag in FLAG_FIELDS)])
    task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, query))

    assert task["status"] == "succeeded", task
    assert task["params"] == {flag: flag in flags for flag in FLAG_FIELDS}
    (call,) = [r for r in sim_state.requests if r["path"] == "/v3/exercises"]
    assert call["query"] == {flag: "true" if flag in flags else "false" for flag in FLAG_FIELDS}
    served = await sim_records(sim_server, "polar", sim_user)
    rows = await assert_exercises_stored(db, user_id, served, flags)
    for flag, field in FLAG_FIELDS.items():
        assert all((field in r["raw"]) == (flag in flags) for r in rows.values()), field
    if "route" in flags:
        assert any(r["raw"]["route"] for r in rows.values())
    assert any(r["raw"]["heart_rate_zones"] for r in rows.values())

    samples = await db.fetch(
        "SELECT sample_type, recorded_at, value FROM samples WHERE user_id = $1", uuid.UUID(user_id)
    )
    if "samples" in flags:
        expected = expected_heart_rate(served["exercises"])
        assert len(expected) > 1000
        # Both spellings of a gap, and RR series without a recording rate, were served.
        served_series = [series for e in served["exercises"] for series in e["samples"]]
        assert any(",null," in series["data"] for series in served_series)
        assert any(",," in series["data"] for series in served_series)
        assert any(series["recording-rate"] is None for series in served_series)
        assert {r["sample_type"] for r in samples} == {"heart_rate"}
        assert {r["recorded_at"]: r["value"] for r in samples} == expected
        assert len(samples) == len(expected)
        assert task["progress"]["workouts"]["records"] == {"workouts": 40, "samples": len(expected)}
    else:
        assert samples == []


async def test_a_second_sync_does_not_register_the_user_again(
    client: Client, factory: Factory, worker: Worker, sim_state: SimState
) -> None:
    """(What it stores: tests/test_providers.py.) The user was registered when connected (which
    confirmed the account), the first sync found it so (409), the second knew it and did not ask."""
    key, user_id, _ = await factory.connected_user("polar")
    for _ in range(2):
        task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, WORKOUTS))
        assert task["status"] == "succeeded", task
    assert [r["status"] for r in sim_state.requests if r["path"] == "/v3/users"] == [200, 409]


async def test_sync_mode_returns_details(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key, user_id, _ = await factory.connected_user("polar")
    resp = await client.post(f"/api/v1/polar/users/{user_id}/sync?async=false", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["success"], body["details"]) == (True, {"workouts": True, "data_247": True})  # fields may be added
    assert await db.fetchval("SELECT count(*) FROM workouts") == 40


async def test_a_refused_token_deactivates_the_connection_as_there_is_no_refresh_token(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, settings: Settings
) -> None:
    key, user_id, _ = await factory.connected_user("polar")
    assert (await stored_tokens(db, settings))["refresh_token"] is None
    await db.execute("UPDATE provider_connections SET access_token = 'garbage'")
    task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, WORKOUTS))

    assert task["status"] == "failed"
    assert task["result"] == {"workouts": False}
    assert "polar refused the access token and issues no refresh token" in task["error"]
    assert "must connect polar again" in task["error"]
    assert [r["status"] for r in sim_state.requests if r["provider"] == "polar"][-1:] == [401]
    assert [g for g in sim_state.grants if g[1] == "refresh_token"] == []  # nothing to refresh with
    resp = await client.get(f"/api/v1/users/{user_id}/connections", headers={"X-API-Key": key})
    (connection,) = await resp.json()
    assert connection["active"] is False
    assert "issues no refresh token" in connection["inactive_reason"]
    resp = await client.post(f"/api/v1/polar/users/{user_id}/sync", headers={"X-API-Key": key})
    assert (resp.status, await resp.json()) == (404, {"detail": "No active connection found for provider"})


async def test_simulator_serves_data_only_to_registered_users(
    factory: Factory, sim_server: TestServer, sim_state: SimState
) -> None:
    tokens = await factory.sim_tokens("polar", "unregistered")
    assert tokens.refresh_token is None
    assert tokens.expires_at is not None
    assert tokens.expires_at > datetime.now(UTC) + timedelta(days=3000)
    headers = {"Authorization": f"Bearer {tokens.access_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(sim_server.make_url("/polar/api/v3/exercises")) as resp:
            assert resp.status == 403
            assert (await resp.json())["errorType"] == "Forbidden"
        async with session.post(sim_server.make_url("/polar/api/v3/users"), json={"member-id": "m-1"}) as resp:
            assert resp.status == 200
            user = await resp.json()
        assert (user["member-id"], str(user["polar-user-id"])) == ("m-1", tokens.provider_user_id)
        async with session.post(sim_server.make_url("/polar/api/v3/users"), json={"member-id": "m-1"}) as resp:
            assert resp.status == 409
        async with session.get(sim_server.make_url("/polar/api/v3/exercises?samples=true")) as resp:
            assert resp.status == 200
            exercises = await resp.json()
        assert len(exercises) == 40
        assert all("samples" in e and "route" not in e and "heart_rate_zones" not in e for e in exercises)
        async with session.get(sim_server.make_url(f"/polar/api/v3/exercises/{exercises[0]['id']}?route=true")) as resp:
            assert resp.status == 200
            one = await resp.json()
        assert "route" in one
        assert "samples" not in one
        async with session.get(sim_server.make_url("/polar/api/v3/exercises?zones=yes")) as resp:
            assert resp.status == 400
    async with aiohttp.ClientSession() as session, session.get(sim_server.make_url("/polar/api/v3/exercises")) as resp:
        assert resp.status == 401  # no token


async def test_another_polar_account_and_a_registration_gone_since_are_registered_again(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, first = await factory.connected_user("polar")
    assert (await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, WORKOUTS)))[
        "status"
    ] == "succeeded"

    # The user connects another Polar account while the first is still registered with our app.
    second = f"u{uuid.uuid4().hex[:10]}"
    await factory.connect(key, user_id, "polar", second)
    task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, WORKOUTS))
    assert task["status"] == "succeeded", task
    assert sim_state.registered[("polar", first)] != sim_state.registered[("polar", second)]  # member-ids
    served = {e["id"] for e in (await sim_records(sim_server, "polar", second))["exercises"]}
    stored = {r["provider_record_id"] for r in await db.fetch("SELECT provider_record_id FROM workouts")}
    assert served <= stored

    # Polar forgets the registration (the user removed our app in Flow): the next sync registers again.
    del sim_state.registered[("polar", second)]
    task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, WORKOUTS))
    assert task["status"] == "succeeded", task
    calls = [(r["method"], r["path"], r["status"]) for r in sim_state.requests if r["provider"] == "polar"]
    assert calls[-3:] == [("GET", "/v3/exercises", 403), ("POST", "/v3/users", 200), ("GET", "/v3/exercises", 200)]


async def test_disconnecting_one_application_keeps_the_registration_another_application_uses(
    client: Client, factory: Factory, worker: Worker, sim_state: SimState
) -> None:
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    users = []
    for application in ("app-a", "app-b"):  # one Polar account connected in two applications
        key = await factory.api_key(application)
        user_id = await factory.user(key)
        await factory.connect(key, user_id, "polar", sim_user)
        task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, WORKOUTS))
        assert task["status"] == "succeeded", task
        users.append((key, user_id))
    (key_a, user_a), (key_b, user_b) = users

    resp = await client.delete(f"/api/v1/users/{user_a}/connections/polar", headers={"X-API-Key": key_a})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["active"], body["upstream_revoked"]) == (False, False)
    assert "another application's connection uses it" in body["upstream_error"]
    assert not any(r["method"] == "DELETE" for r in sim_state.requests)
    assert ("polar", sim_user) in sim_state.registered
    task = await wait_for_task(client, key_b, await start_sync(client, key_b, "polar", user_b, WORKOUTS))
    assert task["status"] == "succeeded", task
    last_call = [r["path"] for r in sim_state.requests if r["provider"] == "polar"][-1]
    assert last_call == "/v3/exercises"  # no registration needed again

    # The last application to let go deregisters the account.
    resp = await client.delete(f"/api/v1/users/{user_b}/connections/polar", headers={"X-API-Key": key_b})
    assert (await resp.json())["upstream_revoked"] is True
    assert ("polar", sim_user) not in sim_state.registered


async def test_as_accesslink_documents_a_new_registration_brings_only_what_is_uploaded_after_it(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, db: asyncpg.Pool, sim_state: SimState
) -> None:
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    sim_state.provider("polar").user_history[sim_user] = {"since_registration": 1}
    key, user_id, _ = await factory.connected_user("polar", sim_user)
    task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, WORKOUTS))
    assert task["status"] == "succeeded", task
    assert await db.fetchval("SELECT count(*) FROM workouts") == 0  # 40 uploaded before: none served

    async with aiohttp.ClientSession() as session:  # the user records an exercise and Flow has it
        url = sim_server.make_url(f"/_sim/polar/users/{sim_user}/events")
        async with session.post(url, json={"kind": "exercise"}) as resp:
            assert resp.status == 200, await resp.text()
            recorded = (await resp.json())["exercise"]
    task = await wait_for_task(client, key, await start_sync(client, key, "polar", user_id, WORKOUTS))
    assert task["status"] == "succeeded", task
    assert [r["provider_record_id"] for r in await db.fetch("SELECT provider_record_id FROM workouts")] == [
        recorded["id"]
    ]
