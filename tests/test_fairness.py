"""Fairness: a long history is synced in bounded jobs that queue up behind other users' jobs."""

import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from tests.conftest import Factory, start_sync, start_worker, wait_for_task
from wearsync.api.app import create_app
from wearsync.providers import PROVIDERS
from wearsync.providers.ratelimit import RateLimiter
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]


async def test_a_long_history_does_not_starve_a_short_one(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState
) -> None:
    big_key, big_user, big_sim = await factory.connected_user("suunto")
    small_key, small_user, small_sim = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[big_sim] = {"workouts": 600}
    sim_state.provider("suunto").user_history[small_sim] = {"workouts": 40}
    tasks = {}
    for key, user in ((big_key, big_user), (small_key, small_user)):
        resp = await client.post(f"/api/v1/suunto/users/{user}/sync?data_type=workouts", headers={"X-API-Key": key})
        tasks[user] = (key, (await resp.json())["task_id"])
    # One job at a time, at most 2 pages a job: the big task (12 pages) must let the small one in.
    one_at_a_time = settings.replace(worker_max_jobs=1, job_max_pages=2, suunto_page_concurrency=1)
    async with start_worker(one_at_a_time):
        done = {user: await wait_for_task(client, key, task_id) for user, (key, task_id) in tasks.items()}
    assert {d["status"] for d in done.values()} == {"succeeded"}
    assert done[big_user]["progress"]["workouts"]["records"] == {"workouts": 600}
    order = [r["user"] for r in sim_state.requests if r["path"] == "/v3/workouts/" and r["status"] == 200]
    last_big = max(i for i, user in enumerate(order) if user == big_sim)
    first_small = order.index(small_sim)
    assert first_small < last_big  # the small sync ran between slices of the big one
    # Every page of the big history was fetched once, over several jobs.
    assert order.count(big_sim) <= 12 + 2
    assert await db.fetchval("SELECT count(*) FROM workouts WHERE user_id = $1::uuid", big_user) == 600


async def test_parameter_variants_cannot_multiply_a_users_open_tasks(
    aiohttp_client: Any, factory: Factory, settings: Settings
) -> None:
    """Syncs differing only in `offset` are distinct tasks; past the user's cap a new one is
    refused (429, Retry-After) while the same sync still joins its open task, and other users
    are not held to this user's count."""
    api: Client = await aiohttp_client(create_app(settings.model_copy(update={"max_open_tasks_per_user": 3})))
    key, user, _ = await factory.connected_user("suunto")
    headers = {"X-API-Key": key}
    url = f"/api/v1/suunto/users/{user}/sync?data_type=workouts&offset={{}}"
    opened = []
    for offset in range(3):  # no worker runs: every task stays queued
        resp = await api.post(url.format(offset), headers=headers)
        assert resp.status == 200, await resp.text()
        opened.append((await resp.json())["task_id"])
    resp = await api.post(url.format(3), headers=headers)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert (await resp.json())["detail"].startswith("The user already has 3 syncs queued or running")
    resp = await api.post(url.format(0), headers=headers)
    assert (resp.status, (await resp.json())["task_id"]) == (200, opened[0])  # the same sync: its task
    other = await factory.user(key)
    await factory.connect(key, other, "suunto", "another-upstream-user")
    resp = await api.post(f"/api/v1/suunto/users/{other}/sync", headers=headers)
    assert resp.status == 200, await resp.text()


async def test_an_applications_open_tasks_are_capped(aiohttp_client: Any, factory: Factory, settings: Settings) -> None:
    api: Client = await aiohttp_client(create_app(settings.model_copy(update={"max_open_tasks_per_app": 2})))
    key, user, _ = await factory.connected_user("suunto")
    other = await factory.user(key)
    await factory.connect(key, other, "suunto", "another-upstream-user")
    headers = {"X-API-Key": key}
    for data_type in ("workouts", "247"):
        resp = await api.post(f"/api/v1/suunto/users/{user}/sync?data_type={data_type}", headers=headers)
        assert resp.status == 200, await resp.text()
    resp = await api.post(f"/api/v1/suunto/users/{other}/sync", headers=headers)
    assert resp.status == 429
    assert (await resp.json())["detail"].startswith("The application already has 2 syncs queued or running")
    other_key, other_apps_user, _ = await factory.connected_user("suunto", application="another")
    resp = await api.post(f"/api/v1/suunto/users/{other_apps_user}/sync", headers={"X-API-Key": other_key})
    assert resp.status == 200, await resp.text()  # another application is not held to this one's count


async def test_a_syncs_calls_count_in_its_applications_share(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState
) -> None:
    """Every call a sync makes counts in its application's share of the shared limiter, which is
    what lets the limiter keep a flooding application to its share."""
    key, user, _ = await factory.connected_user("suunto")
    one_window = settings.replace(suunto_rate_limits="100000/31536000")  # no window ends mid-test
    async with start_worker(one_window):
        task = await wait_for_task(client, key, await start_sync(client, key, "suunto", user, "data_type=workouts"))
    assert task["status"] == "succeeded", task
    calls = sum(1 for r in sim_state.requests if r["provider"] == "suunto" and r["app"] == "api")
    app_id = await db.fetchval("SELECT application_id FROM users WHERE id = $1::uuid", user)
    redis = Redis.from_url(settings.redis_url)
    try:
        limiter = RateLimiter(redis, prefix=f"{settings.queue_name}:ratelimit")
        (limit,) = PROVIDERS["suunto"].bucket(one_window).limits
        assert calls > 0
        assert await limiter.usage("suunto", limit, str(app_id)) == calls
        assert await limiter.usage("suunto", limit) == calls
    finally:
        await redis.aclose()


@pytest.mark.parametrize("other", ["application", "user"])
async def test_a_flood_waiting_for_its_share_gives_its_worker_slot_to_another_sync(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, other: str
) -> None:
    """One worker slot, and a flood's long sync queued just before another application's (or
    another user's of the same application) short one. The limit's window (10 calls an hour)
    outlasts the test, and a wait for it is short enough to be slept (max_wait_s): before, the
    flood took the whole window, then slept in the only slot, and the other sync never started.
    Now the queued sync has its share from the moment it is queued, and the flood, at its share,
    gives the slot up (its job is deferred) instead of sleeping in it."""
    flood_key, flood_user, flood_sim = await factory.connected_user("suunto")
    if other == "application":
        key, user, sim = await factory.connected_user("suunto", application="another")
    else:
        key, user, sim = flood_key, await factory.user(flood_key), f"u{uuid.uuid4().hex[:10]}"
        await factory.connect(key, user, "suunto", sim)
    sim_state.provider("suunto").user_history[flood_sim] = {"workouts": 1000}  # 20 pages
    sim_state.provider("suunto").user_history[sim] = {"workouts": 30}  # 1 page
    flood_task = await start_sync(client, flood_key, "suunto", flood_user, "data_type=workouts")
    task_id = await start_sync(client, key, "suunto", user, "data_type=workouts")
    one_slot = settings.model_copy(update={
        "worker_max_jobs": 1, "suunto_page_concurrency": 1, "suunto_rate_limits": "10/3600",
        "rate_limit_max_wait_s": 3600, "job_max_pages": 100,
    })  # fmt: skip
    async with start_worker(one_slot):
        task = await wait_for_task(client, key, task_id, timeout_s=30)
    assert task["status"] == "succeeded", task
    assert task["progress"]["workouts"]["records"] == {"workouts": 30}
    flood = await wait_for_status(client, flood_key, flood_task)
    assert flood["status"] == "running"
    assert flood["progress"]["workouts"]["status"] == "waiting"  # for the next window: its share is used
    # ... in a job of its own, deferred (a new job id: no deferral budget spent on shares).
    assert await db.fetchval("SELECT job_id FROM sync_tasks WHERE id = $1::uuid", flood_task) != flood_task
    served = [r["user"] for r in sim_state.requests if r["path"] == "/v3/workouts/" and r["status"] == 200]
    assert (served.count(flood_sim), served.count(sim)) == (5, 1)  # half the window each (the other needs 1)


async def wait_for_status(client: Client, key: str, task_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers={"X-API-Key": key})
    assert resp.status == 200
    task: dict[str, Any] = await resp.json()
    return task
