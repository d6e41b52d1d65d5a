"""Token refresh, revoked grants, upstream 429/5xx bursts and the shared rate limiter, end to end
against the Suunto simulator (the mechanisms are shared by every provider)."""

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, refreshes, start_sync, start_worker, stored_tokens, wait_for_task
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]


def statuses(sim_state: SimState, path_prefix: str = "/") -> Counter[Any]:
    return Counter(r["status"] for r in sim_state.requests if r["path"].startswith(path_prefix))


async def test_a_refused_access_token_is_refreshed_once_and_the_sync_completes(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, settings: Settings
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    connected = refreshes(sim_state, "suunto")  # connecting redeemed the refresh token once (Suunto)
    await db.execute("UPDATE provider_connections SET access_token = 'revoked-by-provider'")
    task = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id))
    assert task["status"] == "succeeded", task
    # Both data types met the 401 at once; the connection was refreshed once, and saved.
    assert refreshes(sim_state, "suunto") == connected + 1
    row = await stored_tokens(db, settings)
    assert row is not None
    assert row["access_token"].startswith("suunto.")
    assert row["expires_at"] is not None


async def test_a_token_expiring_mid_sync_is_refreshed_once(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    connected = refreshes(sim_state, "suunto")  # connecting redeemed the refresh token once (Suunto)
    # After 3 pages have been served, the user's access tokens expire upstream.
    sim_state.faults.append(Fault("suunto", "/v3/workouts", "expire_tokens", skip=3, count=1))
    task = await wait_for_task(
        client, key, await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=20")
    )
    assert task["status"] == "succeeded", task
    assert refreshes(sim_state, "suunto") == connected + 1
    assert statuses(sim_state, "/v3/workouts")[401] >= 1
    assert await db.fetchval("SELECT count(*) FROM workouts") == 300  # the simulator's default history
    assert task["progress"]["workouts"]["records"] == {"workouts": 300}


async def test_a_token_known_to_expire_is_refreshed_before_the_first_call(
    client: Client, factory: Factory, worker: Worker, sim_state: SimState
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    await factory.connect(key, user_id, "suunto", "early", expires_at="2000-01-01T00:00:00Z")
    connected = refreshes(sim_state, "suunto")  # connecting redeemed the refresh token once (Suunto)
    task = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id))
    assert task["status"] == "succeeded", task
    assert refreshes(sim_state, "suunto") == connected + 1
    assert statuses(sim_state)[401] == 0  # no call was made with the stale token


async def test_two_concurrent_syncs_needing_a_refresh_do_one_refresh(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    connected = refreshes(sim_state, "suunto")  # connecting redeemed the refresh token once (Suunto)
    await db.execute("UPDATE provider_connections SET access_token = 'stale'")
    sim_state.provider("suunto").latency_s = 0.02
    first = await start_sync(client, key, "suunto", user_id, "data_type=workouts")
    second = await start_sync(client, key, "suunto", user_id, "data_type=247")
    tasks = [await wait_for_task(client, key, t) for t in (first, second)]
    assert [t["status"] for t in tasks] == ["succeeded", "succeeded"]
    started = sorted(t["started_at"] for t in tasks)
    finished = sorted(t["finished_at"] for t in tasks)
    assert started[1] < finished[0], "the two tasks did not overlap"
    assert refreshes(sim_state, "suunto") == connected + 1


async def test_a_revoked_refresh_token_fails_the_task_and_deactivates_the_connection(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    await db.execute("UPDATE provider_connections SET access_token = 'stale'")
    sim_state.refresh_revoked_before[("suunto", sim_user)] = 2e9  # the user revoked our access
    task = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id))
    assert task["status"] == "failed"
    assert task["result"] == {"workouts": False, "data_247": False}
    assert "suunto refused the refresh_token grant" in task["error"]
    assert "must connect suunto again" in task["error"]
    resp = await client.get(f"/api/v1/users/{user_id}/connections", headers={"X-API-Key": key})
    (connection,) = await resp.json()
    assert connection["active"] is False
    assert "invalid_grant" in connection["inactive_reason"]
    # A new sync is answered at once: there is no active connection any more.
    resp = await client.post(f"/api/v1/suunto/users/{user_id}/sync", headers={"X-API-Key": key})
    assert (resp.status, await resp.json()) == (404, {"detail": "No active connection found for provider"})


async def test_a_long_rate_limit_wait_defers_the_job_instead_of_holding_a_slot(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, aiohttp_client: Any
) -> None:
    # Our share: 6 calls per 2 s; we wait in the job at most 0.2 s, so the job is deferred.
    settings = settings.replace(suunto_rate_limits="6/2", rate_limit_max_wait_s=0.2)
    sim_state.provider("suunto").rate_limits = [(6, 2)]
    async with start_worker(settings):
        key, user_id, _ = await factory.connected_user("suunto")
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=20")  # 16 calls
        task = await wait_for_task(client, key, task_id)
    assert task["status"] == "succeeded", task
    assert task["attempts"] > 1  # deferred and resumed
    assert await db.fetchval("SELECT count(*) FROM workouts") == 300
    # Each page was fetched once: a resumed job skips the pages stored before it was deferred.
    served = Counter(int(r["query"]["offset"]) for r in sim_state.requests
                     if r["path"] == "/v3/workouts/" and r["status"] == 200)  # fmt: skip
    assert [served[offset] for offset in range(0, 300, 20)] == [1] * 15
    assert task["progress"]["workouts"]["pages"] == 15
    assert statuses(sim_state)[429] == 0


async def test_the_shared_limiter_keeps_two_worker_processes_under_the_limit(
    client: Client, factory: Factory, settings: Settings, sim_server: TestServer, sim_state: SimState, tmp_path: Path
) -> None:
    """Two real worker processes sync four users at once under a limit of 8 calls per 2 s, which
    the simulator enforces too: no window sees more, and the simulator never answers 429."""
    limit, window = 8, 2
    sim_state.provider("suunto").rate_limits = [(limit, window)]
    env = dict(os.environ) | {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "WEARSYNC_QUEUE_NAME": settings.queue_name,
        "WEARSYNC_SUUNTO_RATE_LIMITS": f"{limit}/{window}",
        "WEARSYNC_RATE_LIMIT_MAX_WAIT_S": "5",
        "WEARSYNC_SCHEDULE_INTERVAL_S": "0",  # only the syncs this test asks for
        "WEARSYNC_TOKEN_KEYS": settings.token_keys,
        **{k: v for k, v in settings.environment().items() if k.startswith("WEARSYNC_SUUNTO_")
           and k != "WEARSYNC_SUUNTO_RATE_LIMITS"},
    }  # fmt: skip
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]  # printed at the end: shown if the test fails
    workers = []
    for log in logs:
        with log.open("wb") as out:
            workers.append(await asyncio.create_subprocess_exec(sys.executable, "-m", "wearsync", "worker", env=env,
                                                                stdout=out, stderr=out))  # fmt: skip
    try:
        task_ids = []
        for _ in range(4):
            key, user_id, _ = await factory.connected_user("suunto")
            task_ids.append((key, await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=50")))
        tasks = [await wait_for_task(client, key, task_id) for key, task_id in task_ids]
    finally:
        for process in workers:
            process.terminate()
        await asyncio.gather(*(p.wait() for p in workers))
        for log in logs:
            print(f"--- output of {log.stem} ---\n{log.read_text(errors='replace')}")
    assert [t["status"] for t in tasks] == ["succeeded"] * 4, tasks
    calls = [r for r in sim_state.requests if r["path"].startswith("/v3/workouts")]
    assert len(calls) >= 4 * 6
    assert statuses(sim_state)[429] == 0
    per_window = Counter(int(r["at"] // window) for r in calls)
    assert max(per_window.values()) <= limit, per_window
