"""Fairness: a long history is synced in bounded jobs that queue up behind other users' jobs."""

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory, start_worker, wait_for_task
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
    one_at_a_time = settings.model_copy(update={"worker_max_jobs": 1, "job_max_pages": 2, "suunto_page_concurrency": 1})
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
