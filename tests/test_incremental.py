"""Incremental syncs: without an explicit range a sync continues from where the last one got to,
so an unchanged account costs the fewest calls; an explicit `since` does what it says."""

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, wait_for_task
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]


async def sync(client: Client, key: str, user_id: str, query: str = "") -> dict[str, object]:
    resp = await client.post(f"/api/v1/suunto/users/{user_id}/sync?{query}", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    return await wait_for_task(client, key, (await resp.json())["task_id"])


def calls(sim_state: SimState, prefix: str) -> list[dict[str, object]]:
    return [r for r in sim_state.requests if str(r["path"]).startswith(prefix) and r["status"] == 200]


async def test_a_resync_of_an_unchanged_account_costs_one_call_per_endpoint(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    first = await sync(client, key, user_id)
    assert first["status"] == "succeeded"
    assert first["params"]["since"] is None  # type: ignore[index]
    assert len(calls(sim_state, "/v3/workouts")) >= 6  # 300 workouts in pages of 50
    stored = await db.fetchval("SELECT count(*) FROM workouts")
    cursors = {r["data_type"]: r["value"] for r in await db.fetch("SELECT * FROM sync_cursors")}
    assert set(cursors) == {"workouts", "data_247"}

    sim_state.requests.clear()
    second = await sync(client, key, user_id)
    assert second["status"] == "succeeded"
    workout_calls = calls(sim_state, "/v3/workouts")
    assert len(workout_calls) == 1  # one empty page: nothing modified since
    assert workout_calls[0]["query"]["since"] == str(cursors["workouts"]["modified_since_ms"])  # type: ignore[index]
    # 24/7: one window (from the last sync's end, with two days' grace for late data) per endpoint.
    assert len(calls(sim_state, "/247")) == 4
    assert await db.fetchval("SELECT count(*) FROM workouts") == stored

    # A new workout upstream: the next incremental sync fetches exactly it.
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim_server.make_url(f"/_sim/suunto/users/{sim_user}/events"), json={}) as resp,
    ):
        new_key = (await resp.json())["workout"]["workoutKey"]
    sim_state.requests.clear()
    third = await sync(client, key, user_id, "data_type=workouts")
    assert third["progress"]["workouts"]["records"] == {"workouts": 1}  # type: ignore[index]
    assert len(calls(sim_state, "/v3/workouts")) == 1
    assert await db.fetchval("SELECT count(*) FROM workouts WHERE provider_record_id = $1", new_key) == 1


async def test_an_explicit_since_does_what_it_says(
    client: Client, factory: Factory, worker: Worker, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    await sync(client, key, user_id, "data_type=workouts")
    sim_state.requests.clear()
    full = await sync(client, key, user_id, "data_type=workouts&since=0")
    assert full["progress"]["workouts"]["records"] == {"workouts": 300}  # type: ignore[index]
    assert {c["query"]["since"] for c in calls(sim_state, "/v3/workouts")} == {"0"}  # type: ignore[index]


async def test_strava_and_whoop_resyncs_cost_about_one_call_per_collection(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    for provider, prefix, most in (("strava", "/api/v3/athlete/activities", 1), ("whoop", "/developer/v2/", 4)):
        key, user_id, _ = await factory.connected_user(provider)
        url = f"/api/v1/{provider}/users/{user_id}/sync"
        first = await client.post(url, headers={"X-API-Key": key})
        assert (await wait_for_task(client, key, (await first.json())["task_id"]))["status"] == "succeeded"
        stored = await db.fetchval("SELECT count(*) FROM workouts WHERE provider = $1", provider)
        sim_state.requests.clear()
        second = await client.post(url, headers={"X-API-Key": key})
        task = await wait_for_task(client, key, (await second.json())["task_id"])
        assert task["status"] == "succeeded", task
        made = [r for r in calls(sim_state, prefix) if r["provider"] == provider]
        # One page since the last sync: Strava has one list, Whoop four collections.
        assert len(made) == most, (provider, made)
        assert await db.fetchval("SELECT count(*) FROM workouts WHERE provider = $1", provider) == stored
