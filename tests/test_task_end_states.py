"""The state a sync task is left in when its job runs out of tries: each a stated one that the
task's API shows, never `running` for good."""

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.constants import job_key_prefix
from arq.worker import Retry
from redis.asyncio import Redis

from tests.conftest import Factory, start_sync
from wearsync.api.common import QUEUE
from wearsync.db import service_pool, tasks
from wearsync.deps import Deps
from wearsync.models import DataType
from wearsync.providers import PROVIDERS
from wearsync.providers.core import SyncContext
from wearsync.worker import reap_lost_tasks, sync_task

Client = TestClient[web.Request, web.Application]


async def task_of(client: Client, key: str, task_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers={"X-API-Key": key})
    assert resp.status == 200
    task: dict[str, Any] = await resp.json()
    return task


async def test_a_task_rate_limited_past_its_last_deferral_fails_saying_so(
    client: Client, factory: Factory, deps: Deps
) -> None:
    busy = dataclasses.replace(deps, settings=deps.settings.replace(suunto_rate_limits="1/3600"))
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


async def test_a_crash_whose_failure_cannot_be_recorded_waits_for_the_reaper_then_fails(
    client: Client, factory: Factory, deps: Deps, db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash of the last try with the database gone as it is recorded leaves the task
    `running`; once it has made no progress for the job timeout + 60 s the reaper gives it a new
    job, whose crash is recorded: `failed`."""
    key, user_id, _ = await factory.connected_user("suunto")
    task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts")

    async def crash(ctx: SyncContext) -> None:
        raise RuntimeError("a bug")

    async def database_gone(*args: Any) -> None:
        raise ConnectionResetError("the database went away")

    monkeypatch.setitem(PROVIDERS["suunto"].sync, DataType.WORKOUTS, crash)
    queue = client.app[QUEUE]
    ctx = {"deps": deps, "redis": queue, "job_id": task_id}
    with monkeypatch.context() as gone:
        gone.setattr(tasks, "finish_task", database_gone)
        with pytest.raises(ConnectionResetError):
            await sync_task(ctx | {"job_try": deps.settings.job_max_tries}, task_id)
    assert (await task_of(client, key, task_id))["status"] == "running"
    # arq ends the failed job; the task makes no progress for longer than a job may run.
    await queue.delete(f"{job_key_prefix}{task_id}")
    idle = deps.settings.job_timeout_s + 61
    await db.execute(
        "UPDATE sync_tasks SET updated_at = now() - make_interval(secs => $2) WHERE id = $1",
        uuid.UUID(task_id),
        idle,
    )
    assert await reap_lost_tasks(ctx) == 1
    new_job = await db.fetchval("SELECT job_id FROM sync_tasks WHERE id = $1", uuid.UUID(task_id))
    assert new_job.startswith(f"{task_id}:")
    assert await sync_task(ctx | {"job_id": new_job, "job_try": 1}, task_id) is None
    task = await task_of(client, key, task_id)
    assert task["status"] == "failed"
    assert task["error"] == "internal error: RuntimeError('a bug')"
