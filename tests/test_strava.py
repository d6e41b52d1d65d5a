"""Strava end to end: API -> arq on Redis -> worker -> the Strava simulator over a socket ->
PostgreSQL, and the simulator itself as a Strava client would meet it.

Expected rows are computed here from what the simulator says it serves, independently of the
client's mapping code, and compared field by field."""

import asyncio
import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, refreshes, sim_records, start_sync, start_worker, stored_tokens, wait_for_task
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]
LIST = "/api/v3/athlete/activities"
# The simulator's sport types and what they are in our list; anything else is `other`.
SPORTS = {"Run": "running", "TrailRun": "trail_running", "VirtualRun": "treadmill_running", "Walk": "walking",
          "Hike": "hiking", "Ride": "cycling", "MountainBikeRide": "mountain_biking", "GravelRide": "gravel_cycling",
          "EBikeRide": "e_biking", "VirtualRide": "indoor_cycling", "Swim": "swimming", "Rowing": "rowing",
          "NordicSki": "cross_country_skiing", "AlpineSki": "alpine_skiing", "WeightTraining": "strength_training",
          "Yoga": "yoga", "HighIntensityIntervalTraining": "aerobics"}  # fmt: skip
REFUSED_REFRESH = {"message": "Bad Request",
                   "errors": [{"resource": "RefreshToken", "field": "refresh_token", "code": "invalid"}]}  # fmt: skip


def list_calls(sim_state: SimState) -> list[dict[str, Any]]:
    return [r for r in sim_state.requests if r["provider"] == "strava" and r["path"] == LIST]


async def stored_pages(db: asyncpg.Pool, task_id: str) -> dict[str, int]:
    """The worker's bookkeeping of stored pages (not shown by the task endpoint)."""
    progress = await db.fetchval("SELECT progress FROM sync_tasks WHERE id = $1", uuid.UUID(task_id))
    done: dict[str, int] = progress["workouts"]["done"]
    return done


async def assert_everything_stored(db: asyncpg.Pool, user_id: str, served: list[dict[str, Any]]) -> None:
    rows = await db.fetch("SELECT * FROM workouts WHERE user_id = $1", uuid.UUID(user_id))
    workouts = {r["provider_record_id"]: r for r in rows}
    assert len(workouts) == len(served) == len(rows)
    for a in served:
        row = workouts[str(a["id"])]
        start = datetime.strptime(a["start_date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert row["provider"] == "strava"
        assert row["raw"] == a
        assert (row["sport"], row["provider_sport"]) == (SPORTS.get(a["sport_type"], "other"), a["sport_type"])
        assert row["name"] == a["name"]
        assert row["start_time"] == start
        assert row["end_time"] == start + timedelta(seconds=a["elapsed_time"])
        assert row["duration_s"] == a["elapsed_time"]
        assert row["utc_offset_minutes"] * 60 == a["utc_offset"]
        assert row["distance_m"] == a["distance"]
        assert row["ascent_m"] == a["total_elevation_gain"]
        assert (row["avg_speed_mps"], row["max_speed_mps"]) == (a["average_speed"], a["max_speed"])
        assert (row["avg_hr"], row["max_hr"]) == (
            (a["average_heartrate"], a["max_heartrate"]) if a["has_heartrate"] else (None, None)
        )
        assert row["energy_kcal"] == a.get("kilojoules")  # the list has no calories: the work done
        assert (row["avg_power_w"], row["max_power_w"]) == (a.get("average_watts"), a.get("max_watts"))
        assert (row["max_altitude_m"], row["min_altitude_m"]) == (a.get("elev_high"), a.get("elev_low"))
        assert row["avg_cadence"] == a.get("average_cadence")
        assert row["device_name"] == a.get("device_name")
        assert (row["steps"], row["min_hr"], row["descent_m"]) == (None, None, None)


async def test_async_sync_lands_every_served_activity_from_a_fixed_range(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("strava")
    task = await wait_for_task(client, key, await start_sync(client, key, "strava", user_id))

    assert task["status"] == "succeeded", task
    assert (task["result"], task["data_types"], task["params"]) == ({"workouts": True}, ["workouts"], {})
    served = await sim_records(sim_server, "strava", sim_user)
    activities = served["activities"]
    assert len(activities) == 450  # the simulator's default history
    # The edge cases the simulator promises are among them.
    assert "Pickleball" in {a["sport_type"] for a in activities}  # one of Strava's we map to "other"
    assert any(a["manual"] and "device_name" not in a for a in activities)
    assert any(not a["has_heartrate"] for a in activities)
    await assert_everything_stored(db, user_id, activities)

    progress = task["progress"]["workouts"]
    assert (progress["records"], progress["pages"]) == ({"workouts": 450}, 3)
    assert await stored_pages(db, task["task_id"]) == {"page:1": 200, "page:2": 200, "page:3": 50}
    # Only the list was read (no detail call per activity), always over the same range.
    strava_paths = {r["path"] for r in sim_state.requests if r["provider"] == "strava"}
    # The token endpoint: the connection's code grant; the athlete: connecting learnt whose it is.
    assert strava_paths == {LIST, "/oauth/token", "/api/v3/athlete"}
    assert refreshes(sim_state, "strava") == 0
    calls = list_calls(sim_state)
    started = int(datetime.fromisoformat(task["started_at"]).timestamp())
    assert {(c["query"]["before"], c["query"]["after"], c["query"]["per_page"]) for c in calls} == {
        (str(started), "0", "200")
    }
    pages = sorted(int(c["query"]["page"]) for c in calls)
    assert pages[:3] == [1, 2, 3]
    assert len(pages) <= 3 + 3  # beyond page 3, only what was in flight (concurrency 4)
    # The connection is keyed by the athlete id of the token response.
    row = await db.fetchrow("SELECT provider_user_id FROM provider_connections")
    assert row is not None
    assert row["provider_user_id"] == str(served["athlete"]["id"])


async def test_sync_mode_answers_success_per_type(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key, user_id, _ = await factory.connected_user("strava")
    for query in ("async=false", "data_type=workouts&async=false"):
        resp = await client.post(f"/api/v1/strava/users/{user_id}/sync?{query}", headers={"X-API-Key": key})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert (body["success"], body["details"]) == (True, {"workouts": True})
    assert await db.fetchval("SELECT count(*) FROM workouts") == 450
    resp = await client.post(
        f"/api/v1/strava/users/{user_id}/sync?data_type=247&async=false", headers={"X-API-Key": key}
    )
    assert resp.status == 501


async def refresh_grant(settings: Settings, refresh_token: str) -> tuple[int, dict[str, Any]]:
    """Ask the simulator's token endpoint for a refresh, as Strava's clients do."""
    config = settings.providers["strava"]
    form = {"client_id": config.client_id, "client_secret": config.client_secret,
            "grant_type": "refresh_token", "refresh_token": refresh_token}  # fmt: skip
    async with aiohttp.ClientSession() as session, session.post(f"{config.auth_url}/oauth/token", data=form) as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def test_an_expiring_token_is_refreshed_and_the_rotated_refresh_token_stored(
    client: Client, factory: Factory, worker: Worker, settings: Settings, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    await factory.connect(key, user_id, "strava", f"u{uuid.uuid4().hex[:10]}", expires_at="2000-01-01T00:00:00Z")
    old = await stored_tokens(db, settings)
    assert old is not None
    # Besides, the access token expires upstream after the first page.
    sim_state.faults.append(Fault("strava", LIST, "expire_tokens", skip=1, count=1))
    task = await wait_for_task(client, key, await start_sync(client, key, "strava", user_id))

    assert task["status"] == "succeeded", task
    assert await db.fetchval("SELECT count(*) FROM workouts") == 450
    assert refreshes(sim_state, "strava") == 2  # before the first call, and once on the 401
    assert Counter(c["status"] for c in list_calls(sim_state))[401] >= 1
    new = await stored_tokens(db, settings)
    assert new is not None
    assert new["refresh_token"] != old["refresh_token"]
    assert new["access_token"] != old["access_token"]
    # Six hours from Strava's `expires_at` (epoch seconds).
    assert abs((new["expires_at"] - datetime.now(UTC)) - timedelta(hours=6)) < timedelta(minutes=1)
    # The simulator rotates: the first refresh token is now refused, with Strava's answer.
    assert await refresh_grant(settings, old["refresh_token"]) == (400, REFUSED_REFRESH)
    status, body = await refresh_grant(settings, new["refresh_token"])
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert body["refresh_token"] != new["refresh_token"]
    assert "athlete" not in body  # a refresh answer carries no athlete


async def test_a_refused_refresh_token_deactivates_the_connection(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("strava")
    await db.execute("UPDATE provider_connections SET access_token = 'stale', refresh_token = 'used-before'")
    task = await wait_for_task(client, key, await start_sync(client, key, "strava", user_id))
    assert task["status"] == "failed"
    assert "strava refused the refresh_token grant" in task["error"]
    reason = await db.fetchval("SELECT inactive_reason FROM provider_connections WHERE NOT active")
    assert '"resource": "RefreshToken"' in reason


async def test_stravas_daily_limit_fails_a_sync_call_with_the_wait_until_midnight(
    client: Client, factory: Factory, db: asyncpg.Pool, sim_state: SimState
) -> None:
    """The simulator's daily read limit (2 calls here) is met, the overall one is not: its 429
    carries no Retry-After, only the usage headers, from which the wait until midnight UTC is read
    (not the next quarter hour)."""
    key, user_id, _ = await factory.connected_user("strava")
    sim_state.provider("strava").read_rate_limits = [(100, 900), (2, 86400)]
    resp = await client.post(f"/api/v1/strava/users/{user_id}/sync?async=false", headers={"X-API-Key": key})
    body = await resp.json()
    assert (resp.status, body["success"], body["details"]) == (200, False, {"workouts": False})
    error = await db.fetchval("SELECT error FROM sync_tasks")
    assert "Rate Limit Exceeded" in error
    match = re.search(r"retry in (\d+)s", error)
    assert match is not None, error
    ends = time.time() + int(match.group(1))
    assert abs(ends - round(ends / 86400) * 86400) < 3  # midnight UTC
    assert await db.fetchval("SELECT count(*) FROM workouts") in (200, 400)  # what came before the limit


async def test_a_deferred_job_resumes_without_fetching_stored_pages_again(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState
) -> None:
    # Our share: 2 calls per 2 s, waited out in the job for at most 0.2 s. Pages 1 and 2 take the
    # window's slots; page 3 finds it full, so the job is deferred until the window ends.
    settings = settings.model_copy(
        update={"strava_rate_limits": "2/2", "rate_limit_max_wait_s": 0.2, "strava_page_concurrency": 2}
    )
    async with start_worker(settings):
        key, user_id, _ = await factory.connected_user("strava")
        await asyncio.sleep(2 - time.time() % 2 + 0.01)  # the first run starts early in a window
        task = await wait_for_task(client, key, await start_sync(client, key, "strava", user_id))
    assert task["status"] == "succeeded", task
    assert task["attempts"] > 1  # deferred and resumed
    assert await db.fetchval("SELECT count(*) FROM workouts") == 450
    assert task["progress"]["workouts"]["pages"] == 3
    assert await stored_pages(db, task["task_id"]) == {"page:1": 200, "page:2": 200, "page:3": 50}
    calls = list_calls(sim_state)
    served = Counter(int(c["query"]["page"]) for c in calls if c["status"] == 200)
    assert served[1] == 1  # stored by the first run, never asked again
    assert len({c["query"]["before"] for c in calls}) == 1  # every run listed the same range
    assert Counter(c["status"] for c in calls)[429] == 0


# ---- the simulator as Strava's clients meet it ------------------------------------------------


def usage(headers: Any) -> int:
    """The day's usage from Strava's header; the 15-minute figure is no larger (it may have just
    started a new window)."""
    quarter, day = (int(n) for n in headers["X-RateLimit-Usage"].split(","))
    assert quarter <= day
    return day


async def test_simulator_speaks_stravas_api(
    factory: Factory, settings: Settings, sim_server: TestServer, sim_state: SimState
) -> None:
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    tokens = await factory.sim_tokens("strava", sim_user)
    served = await sim_records(sim_server, "strava", sim_user)
    assert tokens.raw["athlete"] == served["athlete"]
    assert tokens.raw["token_type"] == "Bearer"
    assert abs(tokens.raw["expires_at"] - (time.time() + 21600)) < 60
    assert tokens.provider_user_id == str(served["athlete"]["id"])
    activities = served["activities"]
    epochs = [int(datetime.fromisoformat(a["start_date"]).timestamp()) for a in activities]
    api = settings.providers["strava"].api_url
    auth = {"Authorization": f"Bearer {tokens.access_token}"}

    async with aiohttp.ClientSession(headers=auth) as session:

        async def get(path: str, **query: Any) -> tuple[int, Any, Any]:
            async with session.get(f"{api}{path}", params=query) as resp:
                return resp.status, await resp.json(), resp.headers

        status, page, headers = await get(LIST, before=epochs[-1] + 1)
        assert status == 200
        assert [a["id"] for a in page] == [a["id"] for a in reversed(activities[-30:])]  # newest first, 30
        # Overall 200 per 15 minutes and 2,000 a day; reads (every call here) 100 and 1,000.
        assert (headers["X-RateLimit-Limit"], headers["X-ReadRateLimit-Limit"]) == ("200,2000", "100,1000")
        assert usage(headers) == 1
        assert headers["X-ReadRateLimit-Usage"] == headers["X-RateLimit-Usage"]  # every call counts in both
        assert "Retry-After" not in headers
        _, page, _ = await get(LIST, after=epochs[9], per_page=5)  # only after: oldest first
        assert [a["id"] for a in page] == [a["id"] for a in activities[10:15]]
        _, page, _ = await get(LIST, before=epochs[20], after=epochs[9], page=2, per_page=5)  # strict bounds
        assert [a["id"] for a in page] == [a["id"] for a in reversed(activities[10:15])]
        _, page, _ = await get(LIST, per_page=500)
        assert len(page) == 200  # clamped to Strava's maximum
        _, page, _ = await get(LIST, page=4, per_page=200)
        assert page == []  # past the end

        status, detail, _ = await get(f"/api/v3/activities/{activities[0]['id']}")
        assert status == 200
        assert detail["calories"] == served["calories"][str(activities[0]["id"])]
        assert detail["resource_state"] == 3
        assert {k: v for k, v in detail.items() if k not in ("calories", "resource_state", "description")} == {
            k: v for k, v in activities[0].items() if k != "resource_state"
        }
        assert (await get("/api/v3/activities/1"))[:2] == (
            404,
            {"message": "Record Not Found", "errors": [{"resource": "Activity", "field": "id", "code": "invalid"}]},
        )
        status, body, headers = await get("/api/v3/athlete")
        assert (status, body) == (200, served["athlete"])
        assert usage(headers) == 8  # every answer counted and told

    async with aiohttp.ClientSession(headers={"Authorization": "Bearer nope"}) as session:
        async with session.get(f"{api}{LIST}") as resp:
            assert resp.status == 401
            assert (await resp.json())["message"] == "Authorization Error"
            assert usage(resp.headers) == 9
        sim_state.provider("strava").rate_limits = [(1000, 900), (9, 86400)]
        async with session.get(f"{api}{LIST}") as resp:
            assert resp.status == 429
            assert await resp.json() == {
                "message": "Rate Limit Exceeded",
                "errors": [{"resource": "Application", "field": "rate limit", "code": "exceeded"}],
            }
            assert resp.headers["X-RateLimit-Limit"] == "1000,9"
            assert usage(resp.headers) == 10
            assert "Retry-After" not in resp.headers
        # The read limit refuses on its own.
        sim_state.provider("strava").rate_limits = None
        sim_state.provider("strava").read_rate_limits = [(1000, 900), (10, 86400)]
        async with session.get(f"{api}{LIST}") as resp:
            assert resp.status == 429
            assert (await resp.json())["message"] == "Rate Limit Exceeded"
            assert (resp.headers["X-RateLimit-Limit"], resp.headers["X-ReadRateLimit-Limit"]) == ("200,2000", "1000,10")
            assert resp.headers["X-ReadRateLimit-Usage"].endswith(",11")
            assert usage(resp.headers) == 11

    # Strava's token endpoint answers under /api/v3 too; a used authorization code is Strava's 400.
    config = settings.providers["strava"]
    form = {"client_id": config.client_id, "client_secret": config.client_secret,
            "grant_type": "authorization_code", "code": "not-a-user-code"}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{config.auth_url}/api/v3/oauth/token", data=form) as resp:
            assert resp.status == 400
            assert (await resp.json())["errors"][0]["resource"] == "AuthorizationCode"
        async with session.post(f"{config.auth_url}/api/v3/oauth/token", data=form | {"code": "user-x"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["athlete"]["firstname"] == "x"
