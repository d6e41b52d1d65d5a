"""The state a sync task is left in when its job runs out of tries: each a stated one that the
task's API shows, never `running` for good."""

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.worker import Retry
from redis.asyncio import Redis

from tests.conftest import Factory, start_sync
from wearsync.db import service_pool
from wearsync.providers import PROVIDERS
from wearsync.sync import Deps
from wearsync.worker import sync_task

Client = TestClient[web.Request, web.Application]


async def task_of(client: Client, key: str, task_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers={"X-API-Key": key})
    assert resp.status == 200
    task: dict[str, Any] = await resp.json()
    return task


async def test_a_task_rate_limited_past_its_last_deferral_fails_saying_so(
    client: Client, factory: Factory, deps: Deps
) -> None:
    busy = dataclasses.replace(deps, settings=deps.settings.model_copy(update={"suunto_rate_limits": "1/3600"}))
    key, user_id, _ = await factory.connected_user("suunto")
    task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts")  # no worker runs it
    assert deps.http.limiter is not None
    await deps.http.limiter.acquire("suunto", PROVIDERS["suunto"].bucket(busy.settings).limits)  # the window's one call
    last_try = busy.settings.job_max_tries + busy.settings.rate_limit_max_deferrals
    redis = Redis.from_url(deps.settings.redis_url)
    try:
        ctx = {"deps": busy, "redis": redis, "job_id": task_id}
        with pytest.raises(Retry):  # deferred until the window reopens, as long as it may be
            await sync_task(ctx | {"job_try": last_try - 1}, task_id)
        assert (await task_of(client, key, task_id))["status"] in ("queued", "running")
        assert await sync_task(ctx | {"job_try": last_try}, task_id) is None
    finally:
        await redis.aclose()
    task = await task_of(client, key, task_id)
    assert task["status"] == "failed"
    assert task["error"].startswith("gave up waiting: suunto's rate limit is used up")
    assert task["finished_at"] is not None


@contextlib.asynccontextmanager
async def workouts_locked(database_url: str) -> AsyncIterator[None]:
    """Another transaction holding a lock that every write of workouts waits for."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE workouts IN EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def test_a_task_whose_database_fails_past_its_tries_fails_saying_so(
    client: Client, factory: Factory, deps: Deps
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts")
    impatient = deps.settings.model_copy(update={"db_lock_timeout_s": 0.05})
    pool = await service_pool(impatient, 4)
    redis = Redis.from_url(deps.settings.redis_url)
    try:
        ctx = {"deps": dataclasses.replace(deps, settings=impatient, db=pool), "redis": redis, "job_id": task_id}
        async with workouts_locked(deps.settings.database_url):
            with pytest.raises(Retry):  # tries left: the job is retried
                await sync_task(ctx | {"job_try": impatient.job_max_tries - 1}, task_id)
            assert (await task_of(client, key, task_id))["status"] == "running"
            with pytest.raises(asyncpg.LockNotAvailableError):  # the last: arq records the job failed ...
                await sync_task(ctx | {"job_try": impatient.job_max_tries}, task_id)
    finally:
        await redis.aclose()
        await pool.close()
    task = await task_of(client, key, task_id)  # ... and so does the task
    assert task["status"] == "failed"
    assert task["error"].startswith(f"database errors in {impatient.job_max_tries} tries, the last: LockNotAvailable")
    assert task["finished_at"] is not None
