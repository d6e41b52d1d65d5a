"""Whoop end to end: API -> arq on Redis -> worker -> Whoop simulator over a socket -> PostgreSQL.

Expected rows are computed here from what the simulator says it serves, independently of the
client's mapping code, and compared field by field. The reach is set to the simulator's history
(125 days in sub-ranges of 45), so a sync costs about 40 calls, under Whoop's 100 per minute."""

import itertools
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, sim_records, start_sync, start_worker, stored_tokens, wait_for_task
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
PATHS = {"workout": "/developer/v2/activity/workout", "sleep": "/developer/v2/activity/sleep",
         "recovery": "/developer/v2/recovery", "cycle": "/developer/v2/cycle"}  # fmt: skip
# Our sports for the simulator's sport names; "spikeball" is deliberately unknown (-> other).
SPORTS = {"running": "running", "cycling": "cycling", "walking": "walking", "hiking/rucking": "hiking",
          "mountain-biking": "mountain_biking", "weightlifting": "strength_training",
          "functional-fitness": "strength_training", "yoga": "yoga", "swimming": "swimming", "rowing": "rowing",
          "tennis": "tennis", "hiit": "aerobics", "pilates": "pilates", "boxing": "boxing"}  # fmt: skip
TABLES = ("workouts", "sleep_sessions", "recoveries", "daily_activity")
HISTORY_DAYS, RANGE_DAYS = 125, 45


@pytest.fixture
async def settings(settings: Settings) -> Settings:
    return settings.replace(whoop_history_days=HISTORY_DAYS, whoop_range_days=RANGE_DAYS)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def minutes(offset: str) -> int:
    hours, mins = offset[1:].split(":")
    return (-1 if offset[0] == "-" else 1) * (int(hours) * 60 + int(mins))


def secs(millis: int | None) -> float | None:
    return None if millis is None else millis / 1000


def calls(sim_state: SimState, kind: str, status: Any = 200) -> list[dict[str, Any]]:
    return [r for r in sim_state.requests if r["path"] == PATHS[kind] and r["status"] == status]


async def by_id(db: asyncpg.Pool, table: str, user_id: str) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(f"SELECT * FROM {table} WHERE user_id = $1 AND provider = 'whoop'", uuid.UUID(user_id))
    return {r["provider_record_id"]: r for r in rows}


async def assert_everything_stored(db: asyncpg.Pool, user_id: str, served: dict[str, Any]) -> None:
    workouts = await by_id(db, "workouts", user_id)
    assert len(workouts) == len(served["workout"]) == 300
    for w in served["workout"]:
        row, score = workouts[w["id"]], w.get("score", {})
        start, end = at(w["start"]), at(w["end"])
        assert row["raw"] == w
        assert (row["sport"], row["provider_sport"]) == (SPORTS.get(w["sport_name"], "other"), w["sport_name"])
        assert (row["start_time"], row["end_time"]) == (start, end)
        assert row["duration_s"] == (end - start).total_seconds()
        assert row["utc_offset_minutes"] == minutes(w["timezone_offset"])
        assert row["energy_kcal"] == (score["kilojoule"] / 4.184 if score else None)
        assert row["distance_m"] == score.get("distance_meter")
        assert row["ascent_m"] == score.get("altitude_gain_meter")
        assert (row["avg_hr"], row["max_hr"]) == (score.get("average_heart_rate"), score.get("max_heart_rate"))
        assert row["name"] is row["steps"] is row["device_name"] is None

    sleeps = await by_id(db, "sleep_sessions", user_id)
    assert len(sleeps) == len(served["sleep"])
    for s in served["sleep"]:
        row, score = sleeps[s["id"]], s.get("score", {})
        stages = score.get("stage_summary", {})
        assert row["raw"] == s
        assert (row["start_time"], row["end_time"]) == (at(s["start"]), at(s["end"]))
        assert row["duration_s"] == (at(s["end"]) - at(s["start"])).total_seconds()
        assert row["utc_offset_minutes"] == minutes(s["timezone_offset"])
        assert row["is_nap"] == s["nap"]
        assert row["deep_s"] == secs(stages.get("total_slow_wave_sleep_time_milli"))
        assert row["light_s"] == secs(stages.get("total_light_sleep_time_milli"))
        assert row["rem_s"] == secs(stages.get("total_rem_sleep_time_milli"))
        assert row["awake_s"] == secs(stages.get("total_awake_time_milli"))
        assert row["score"] == score.get("sleep_performance_percentage")
        assert row["respiratory_rate"] == score.get("respiratory_rate")

    recoveries = await by_id(db, "recoveries", user_id)
    assert len(recoveries) == len(served["recovery"])
    for r in served["recovery"]:
        row, score = recoveries[str(r["cycle_id"])], r.get("score", {})
        assert row["raw"] == r
        assert row["recorded_at"] == at(r["created_at"])
        assert (row["score"], row["resting_hr"], row["hrv_rmssd_ms"], row["spo2_percent"], row["skin_temp_c"]) == (
            score.get("recovery_score"), score.get("resting_heart_rate"), score.get("hrv_rmssd_milli"),
            score.get("spo2_percentage"), score.get("skin_temp_celsius"),
        )  # fmt: skip

    days = await by_id(db, "daily_activity", user_id)
    assert len(days) == len(served["cycle"])
    for c in served["cycle"]:
        row, score = days[str(c["id"])], c.get("score", {})
        assert row["raw"] == c
        assert row["day"] == (at(c["start"]) + timedelta(minutes=minutes(c["timezone_offset"]))).date()
        assert row["energy_kcal"] == (score["kilojoule"] / 4.184 if score else None)
        assert row["steps"] is None


async def test_async_sync_lands_every_served_record(
    client: Client, factory: Factory, worker: Worker, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("whoop")
    task = await wait_for_task(client, key, await start_sync(client, key, "whoop", user_id))

    assert task["status"] == "succeeded", task
    assert task["result"] == {"workouts": True, "data_247": True}
    assert (task["provider"], task["mode"], task["params"]) == ("whoop", "async", {})
    served = await sim_records(sim_server, "whoop", sim_user)
    await assert_everything_stored(db, user_id, served)
    # The edge cases are in the served data, so the comparison above covered them.
    assert {w["score_state"] for w in served["workout"]} == {"SCORED", "PENDING_SCORE", "UNSCORABLE"}
    assert any(w["sport_name"] == "spikeball" for w in served["workout"])
    assert any("end" not in c for c in served["cycle"])  # the current cycle
    assert any(s["nap"] for s in served["sleep"])

    # Progress counts each record once, though boundary-spanning records are served twice.
    workouts, d247 = task["progress"]["workouts"], task["progress"]["data_247"]
    assert workouts["records"] == {"workouts": 300}
    assert d247["records"] == {"sleep": len(served["sleep"]), "recovery": len(served["recovery"]),
                               "daily_activity": len(served["cycle"])}  # fmt: skip
    assert workouts["pages"] == len(calls(sim_state, "workout"))
    assert d247["pages"] == sum(len(calls(sim_state, k)) for k in ("sleep", "recovery", "cycle"))

    # Every call: the largest page, RFC 3339 bounds on the 45-day grid from the epoch, back to the reach.
    now = datetime.now(UTC)
    for kind in PATHS:
        requests = calls(sim_state, kind)
        assert {r["query"]["limit"] for r in requests} == {"25"}
        starts = sorted({at(r["query"]["start"]) for r in requests})
        assert all(r["query"]["start"].endswith(".000Z") for r in requests)
        assert all((s - datetime(1970, 1, 1, tzinfo=UTC)) % timedelta(days=RANGE_DAYS) == timedelta(0) for s in starts)
        assert [b - a for a, b in itertools.pairwise(starts)] == [timedelta(days=RANGE_DAYS)] * (len(starts) - 1)
        assert now - timedelta(days=HISTORY_DAYS + RANGE_DAYS) < starts[0] <= now - timedelta(days=HISTORY_DAYS)
        assert max(at(r["query"]["end"]) for r in requests) > now - timedelta(minutes=5)
        # Each sub-range paged from its first page: as many first pages as sub-ranges.
        assert sum("nextToken" not in r["query"] for r in requests) == len(starts)


async def test_sync_mode_returns_details_and_syncs_only_the_type_asked(
    client: Client, factory: Factory, sim_server: TestServer, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("whoop")
    resp = await client.post(f"/api/v1/whoop/users/{user_id}/sync?async=false", headers={"X-API-Key": key})
    assert resp.status == 200
    body = await resp.json()
    assert (body["success"], body["details"]) == (True, {"workouts": True, "data_247": True})
    await assert_everything_stored(db, user_id, await sim_records(sim_server, "whoop", sim_user))

    sim_state.requests.clear()
    resp = await client.post(
        f"/api/v1/whoop/users/{user_id}/sync?async=false&data_type=247", headers={"X-API-Key": key}
    )
    assert (await resp.json())["details"] == {"data_247": True}
    assert not calls(sim_state, "workout")
    assert calls(sim_state, "sleep")
    assert calls(sim_state, "cycle")


async def test_a_refused_access_token_is_refreshed_once_and_the_refresh_token_rotates(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, settings: Settings
) -> None:
    key, user_id, _ = await factory.connected_user("whoop")
    old_refresh = (await stored_tokens(db, settings))["refresh_token"]
    await db.execute("UPDATE provider_connections SET access_token = 'revoked-by-whoop'")
    task = await wait_for_task(client, key, await start_sync(client, key, "whoop", user_id))

    assert task["status"] == "succeeded", task
    # Both data types met the 401 at once: one refresh (a second would use a spent token).
    assert Counter(grant for _, grant, _ in sim_state.grants)["refresh_token"] == 1
    row = await stored_tokens(db, settings)
    assert row is not None
    assert row["access_token"].startswith("whoop.")
    # Whoop answers a refresh with a new refresh token only when `offline` is asked for again.
    assert row["refresh_token"].startswith("whoop.")
    assert row["refresh_token"] != old_refresh
    assert timedelta(minutes=55) < row["expires_at"] - datetime.now(UTC) <= timedelta(hours=1)

    config = settings.providers["whoop"]
    form = {"grant_type": "refresh_token", "client_id": config.client_id, "client_secret": config.client_secret,
            "scope": "offline"}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        token_url = f"{config.auth_url}/oauth/oauth2/token"
        async with session.post(token_url, data=form | {"refresh_token": old_refresh}) as resp:
            assert (resp.status, (await resp.json())["error"]) == (400, "invalid_grant")
        async with session.post(token_url, data=form | {"refresh_token": row["refresh_token"]}) as resp:
            assert resp.status == 200


async def test_a_token_known_to_expire_is_refreshed_before_the_first_call(
    client: Client, factory: Factory, worker: Worker, sim_state: SimState
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    await factory.connect(key, user_id, "whoop", f"early{uuid.uuid4().hex[:6]}", expires_at="2000-01-01T00:00:00Z")
    task = await wait_for_task(client, key, await start_sync(client, key, "whoop", user_id, "data_type=workouts"))
    assert task["status"] == "succeeded", task
    assert Counter(g[1] for g in sim_state.grants)["refresh_token"] == 1
    assert not [r for r in sim_state.requests if r["status"] == 401]


async def test_two_concurrent_tasks_needing_a_refresh_spend_the_rotating_token_once(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("whoop")
    await db.execute("UPDATE provider_connections SET access_token = 'stale'")
    sim_state.provider("whoop").latency_s = 0.02
    first = await start_sync(client, key, "whoop", user_id, "data_type=workouts")
    second = await start_sync(client, key, "whoop", user_id, "data_type=247")
    tasks = [await wait_for_task(client, key, t) for t in (first, second)]
    assert [t["status"] for t in tasks] == ["succeeded", "succeeded"], tasks
    assert max(t["started_at"] for t in tasks) < min(t["finished_at"] for t in tasks), "the tasks did not overlap"
    assert Counter(grant for _, grant, _ in sim_state.grants)["refresh_token"] == 1


async def test_a_deferred_job_resumes_without_refetching_completed_sub_ranges(
    client: Client, factory: Factory, settings: Settings, sim_server: TestServer, sim_state: SimState,
    db: asyncpg.Pool,
) -> None:  # fmt: skip
    # Our share: 5 calls per 2 s, waited out in the job for at most 0.1 s, so the ~12 calls defer
    # the job (the simulator's own limit is not reached: the point is resuming, not the limit).
    # One-page sub-ranges (a week each), so every sub-range is either done or not started. One
    # data type: a deferral of one type cancels the other's calls in flight (see sync.run_task).
    settings = settings.replace(whoop_rate_limits="5/2", rate_limit_max_wait_s=0.1, whoop_history_days=21,
                                whoop_range_days=7)  # fmt: skip
    key, user_id, sim_user = await factory.connected_user("whoop")
    sim_state.provider("whoop").user_history[sim_user] = {"days_247": 18}
    async with start_worker(settings):
        task = await wait_for_task(client, key, await start_sync(client, key, "whoop", user_id, "data_type=247"))

    assert task["status"] == "succeeded", task
    assert task["attempts"] > 1  # deferred and resumed
    served = await sim_records(sim_server, "whoop", sim_user)
    for table, kind in zip(TABLES[1:], ("sleep", "recovery", "cycle"), strict=True):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == len(served[kind])
        requests = [r for r in sim_state.requests if r["path"] == PATHS[kind]]
        fetched = Counter(r["query"]["start"] for r in requests)
        assert all("nextToken" not in r["query"] and r["status"] == 200 for r in requests)
        assert len(fetched) in (3, 4)  # 21 days back, rounded down to the 7-day grid
        assert set(fetched.values()) == {1}, (kind, fetched)
    assert task["progress"]["data_247"]["pages"] == len([r for r in sim_state.requests if r["path"] in PATHS.values()])
    # (Its record counts may exceed the rows by the records spanning a sub-range edge that one run
    # stored and the next served again: a task drops repeats within one run only.)


async def test_simulator_pages_every_record_once_and_enforces_whoop_limits(
    factory: Factory, sim_server: TestServer, sim_state: SimState, settings: Settings
) -> None:
    sim_user = f"s{uuid.uuid4().hex[:8]}"
    tokens = await factory.sim_tokens("whoop", sim_user)
    assert tokens.refresh_token is not None
    assert "offline" in tokens.scopes
    served = await sim_records(sim_server, "whoop", sim_user)
    headers = {"Authorization": f"Bearer {tokens.access_token}"}
    config = settings.providers["whoop"]
    api = config.api_url
    async with aiohttp.ClientSession(headers=headers) as session:
        seen: list[str] = []
        query: dict[str, str] = {"limit": "7", "start": "2000-01-01T00:00:00.000Z"}
        while True:
            async with session.get(f"{api}{PATHS['sleep']}", params=query) as resp:
                assert resp.status == 200
                assert resp.headers["X-RateLimit-Limit"] == "100, 100;window=60, 10000;window=86400"
                assert 0 < int(resp.headers["X-RateLimit-Reset"]) <= 60
                page = await resp.json()
            assert len(page["records"]) <= 7
            seen += [s["id"] for s in page["records"]]
            if "next_token" not in page:  # the last page
                break
            query["nextToken"] = page["next_token"]
        assert seen == [s["id"] for s in served["sleep"]]  # newest first, each once

        async with session.get(f"{api}{PATHS['cycle']}") as resp:
            assert len((await resp.json())["records"]) == 10  # the default limit
        for bad in ({"limit": "26"}, {"limit": "0"}, {"start": "yesterday"}, {"nextToken": "%%%"}):
            async with session.get(f"{api}{PATHS['workout']}", params=bad) as resp:
                assert resp.status == 400, bad
        async with session.get(f"{api}/developer/v2/user/profile/basic") as resp:
            assert (await resp.json())["user_id"] == served["user_id"]
        async with session.get(f"{api}{PATHS['cycle']}", headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401
        # A refresh grant that does not ask for `offline` again gets no new refresh token.
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token,
                "client_id": config.client_id, "client_secret": config.client_secret}  # fmt: skip
        async with session.post(f"{config.auth_url}/oauth/oauth2/token", data=form) as resp:
            body = await resp.json()
            assert resp.status == 200
            assert "refresh_token" not in body
            assert "offline" not in body["scope"].split()

        # A window that cannot roll over during the test: two calls left, then Whoop's 429.
        sim_state.provider("whoop").rate_limits = [(2, 10**9)]
        for remaining in ("1", "0"):
            async with session.get(f"{api}{PATHS['recovery']}") as resp:
                assert (resp.status, resp.headers["X-RateLimit-Remaining"]) == (200, remaining)
        async with session.get(f"{api}{PATHS['recovery']}") as resp:
            assert (resp.status, await resp.json()) == (429, {"error": "Too Many Requests"})
            assert resp.headers["X-RateLimit-Limit"] == f"2, 2;window={10**9}"
            assert int(resp.headers["X-RateLimit-Reset"]) > 0
