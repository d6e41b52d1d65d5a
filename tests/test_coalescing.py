"""Coalescing: the same sync requested while it is queued or running is not started twice."""

import asyncio
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq import create_pool
from arq.connections import RedisSettings

from tests.conftest import Factory, start_worker, wait_for_task
from wearsync.api.app import create_app
from wearsync.deps import Deps
from wearsync.settings import Settings
from wearsync.sim.common import SimState
from wearsync.worker import reap_lost_tasks

Client = TestClient[web.Request, web.Application]


async def post(client: Client, key: str, user_id: str, query: str = "") -> dict[str, object]:
    resp = await client.post(f"/api/v1/suunto/users/{user_id}/sync?{query}", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    body: dict[str, object] = await resp.json()
    return body


async def test_the_same_request_while_queued_gets_the_same_task(
    client: Client, factory: Factory, db: asyncpg.Pool
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    # No worker runs: the first task stays queued.
    answers = await asyncio.gather(*(post(client, key, user_id, "data_type=workouts") for _ in range(20)))
    assert len({a["task_id"] for a in answers}) == 1
    assert await db.fetchval("SELECT count(*) FROM sync_tasks") == 1
    # Different parameters (or data types) are a different sync.
    other = await post(client, key, user_id, "data_type=workouts&limit=100")
    both = await post(client, key, user_id)
    assert len({answers[0]["task_id"], other["task_id"], both["task_id"]}) == 3


async def test_a_sync_call_waits_for_the_identical_queued_task(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    queued = await post(client, key, user_id, "data_type=workouts")
    waiting = asyncio.ensure_future(post(client, key, user_id, "data_type=workouts&async=false"))
    await asyncio.sleep(0.5)
    assert not waiting.done()  # it waits for the queued task rather than running its own
    async with start_worker(settings):
        answer = await asyncio.wait_for(waiting, 30)
    assert answer == {"success": True, "details": {"workouts": True}, "task_id": queued["task_id"]}
    assert await db.fetchval("SELECT count(*) FROM sync_tasks") == 1
    listed = [r for r in sim_state.requests if r["path"] == "/v3/workouts/" and r["query"].get("offset") == "0"]
    assert len(listed) == 1  # the upstream list was read once


async def test_a_sync_call_waits_for_an_open_task_only_so_long(
    aiohttp_client: Any, factory: Factory, settings: Settings, db: asyncpg.Pool
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    queued = await post(factory.client, key, user_id, "data_type=workouts")
    # No worker runs, so the queued task never ends: the waiting call gives up with a 504.
    impatient: Client = await aiohttp_client(create_app(settings.model_copy(update={"sync_join_wait_s": 0.5})))
    resp = await impatient.post(
        f"/api/v1/suunto/users/{user_id}/sync?data_type=workouts&async=false", headers={"X-API-Key": key}
    )
    assert resp.status == 504
    detail = (await resp.json())["detail"]
    assert f"task {queued['task_id']}" in detail
    assert "did not finish within 0.5 s" in detail
    assert await db.fetchval("SELECT status FROM sync_tasks") == "queued"  # untouched, still to run


async def test_a_finished_task_does_not_absorb_new_requests(
    client: Client, factory: Factory, settings: Settings
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    async with start_worker(settings):
        first = await post(client, key, user_id, "data_type=workouts")
        await wait_for_task(client, key, str(first["task_id"]))
        second = await post(client, key, user_id, "data_type=workouts")
        assert second["task_id"] != first["task_id"]
        assert (await wait_for_task(client, key, str(second["task_id"])))["status"] == "succeeded"


async def test_a_queued_task_whose_job_redis_lost_is_enqueued_again(
    client: Client, factory: Factory, settings: Settings, deps: Deps, db: asyncpg.Pool
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    lost = str((await post(client, key, user_id, "data_type=workouts"))["task_id"])
    kept = str((await post(client, key, user_id, "data_type=247"))["task_id"])
    await db.execute("UPDATE sync_tasks SET created_at = now() - interval '10 minutes'")
    # A third, as if a worker had started it and died with Redis: running, idle, no job anywhere.
    other_key, other_user, _ = await factory.connected_user("suunto")
    stalled = str((await post(client, other_key, other_user, "data_type=workouts"))["task_id"])
    await db.execute(
        "UPDATE sync_tasks SET status = 'running', attempts = 1, updated_at = now() - interval '1 hour'"
        " WHERE id = $1::uuid",
        stalled,
    )
    redis = await create_pool(RedisSettings.from_dsn(settings.redis_url), default_queue_name=settings.queue_name)
    try:
        # Redis restarted empty as far as `lost` is concerned: its job and its place in the queue are gone.
        for task_id in (lost, stalled):
            await redis.delete(f"arq:job:{task_id}")
            await redis.zrem(settings.queue_name, task_id)
        ctx = {"deps": deps, "redis": redis}
        assert await reap_lost_tasks(ctx) == 2  # `kept` still has its job
        assert await reap_lost_tasks(ctx) == 0  # and now so have the other two
    finally:
        await redis.aclose()
    async with start_worker(settings):
        done = [await wait_for_task(client, key, task_id) for task_id in (lost, kept)]
        done.append(await wait_for_task(client, other_key, stalled))
    assert [d["status"] for d in done] == ["succeeded", "succeeded", "succeeded"]
    assert done[2]["attempts"] == 2
