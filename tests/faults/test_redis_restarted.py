"""Redis restarted (its contents lost) while tasks are queued and running: the worker process and the
API outlive the outage (the API answers 503 meanwhile), the tasks are recovered from their
PostgreSQL rows and finish, and the stored rows are exactly the simulator's records. The same for
webhook events in flight."""

import asyncio
from typing import Any

import asyncpg
import pytest
import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq import create_pool
from arq.connections import ArqRedis
from arq.worker import func
from redis.asyncio.client import Pipeline

from tests.conftest import Factory, sim_records, start_sync, wait_for_task
from tests.faults.servers import OwnRedis, WorkerProcess
from tests.helpers import wait_until
from tests.test_strava_webhooks import emit as strava_emit
from tests.test_strava_webhooks import subscribe
from wearsync.settings import Settings
from wearsync.sim.common import SimState
from wearsync.worker import create_worker, worker_options
from wearsync.worker_loop import WearsyncWorker

Client = TestClient[web.Request, web.Application]
USERS, WORKOUTS = 5, 400
ACTIVITIES = 20  # announced by Strava's webhook


@pytest.fixture
def settings(settings: Settings, own_redis: OwnRedis) -> Settings:
    """The usual test settings, with the queue on this test's own Redis; two jobs at a time, so
    that some tasks wait in the queue; a lost task is looked for once it is a second old."""
    return settings.replace(
        redis_url=own_redis.url, worker_max_jobs=2, task_reap_after_s=1, schedule_interval_s=0,
        # Counted in Redis (so a job needs it on every call), but never the limit here: a
        # restarted Redis forgets what it counted.
        suunto_rate_limits="100000/900",
    )  # fmt: skip


async def stored_ids(db: asyncpg.Pool, user_id: str) -> list[str]:
    rows = await db.fetch("SELECT provider_record_id FROM workouts WHERE user_id = $1", user_id)
    return sorted(r["provider_record_id"] for r in rows)


# A running job that loses Redis waits for it and goes on in a new job (30), or at once leaves its
# task queued in PostgreSQL for the reaper (0); the tasks that were only queued are the reaper's.
@pytest.mark.parametrize(
    ("outage_wait_s", "running_tasks_go_on"),
    [(30, "the task continues in a new job"), (0, "the task is left queued for the reaper")],
    ids=["jobs-wait-for-redis", "reaper-recovers-all"],
)
async def test_tasks_queued_and_running_survive_a_redis_restart(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: object,
    own_redis: OwnRedis, outage_wait_s: float, running_tasks_go_on: str,
) -> None:  # fmt: skip
    suunto = sim_state.provider("suunto")
    suunto.latency_s, suunto.rate_limits = 0.1, [(100000, 900)]
    users = [await factory.connected_user("suunto") for _ in range(USERS + 1)]
    for _, _, sim_user in users:
        suunto.user_history[sim_user] = {"workouts": WORKOUTS}
    async with WorkerProcess(settings.model_copy(update={"redis_outage_wait_s": outage_wait_s})) as worker:
        task_ids = [await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=10")
                    for key, user_id, _ in users[:USERS]]  # fmt: skip
        # Until the first jobs are well into their syncs while the others still wait in the queue.
        await wait_until(lambda: db.fetchval("SELECT count(*) >= 60 FROM workouts"), "first rows stored")
        suunto.latency_s = 2  # no sync can end before Redis is down
        await own_redis.stop()
        states = await db.fetch("SELECT status::text, attempts FROM sync_tasks")
        assert any(s["status"] == "running" for s in states), states
        assert any(s["status"] == "queued" and s["attempts"] == 0 for s in states), states

        # While Redis is down: the API refuses a new sync with a clear 503, and the worker waits.
        key, user_id, _ = users[USERS]
        resp = await asyncio.wait_for(
            client.post(f"/api/v1/suunto/users/{user_id}/sync?data_type=workouts", headers={"X-API-Key": key}), 5
        )
        assert resp.status == 503, await resp.text()
        assert (await resp.json()) == {"detail": "Queue unavailable, try again later"}
        refused = await db.fetchrow("SELECT status::text, error FROM sync_tasks WHERE user_id = $1", user_id)
        assert refused is not None
        assert (refused["status"], refused["error"]) == ("failed", "could not enqueue the task")
        await wait_until(
            lambda: worker.logged("the worker waits for it"), "the worker noticing the outage", detail=worker.log
        )
        await wait_until(
            lambda: worker.logged("the task waits for it"), "a running job noticing the outage", detail=worker.log
        )
        assert worker.alive, worker.log()

        await own_redis.start()  # empty: every job, queued or in progress, is gone
        suunto.latency_s = 0.1
        for task_id, (task_key, _, _) in zip(task_ids, users, strict=False):
            task = await wait_for_task(client, task_key, task_id)
            assert task["status"] == "succeeded", task
        assert await worker.logged("lost its contents, looking for lost tasks"), worker.log()
        assert await worker.logged(running_tasks_go_on), worker.log()
        # The API and the worker work as before.
        again = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=10")
        assert (await wait_for_task(client, key, again))["status"] == "succeeded"
        assert worker.alive, worker.log()
    for _, user_id, sim_user in users:
        served = await sim_records(sim_server, "suunto", sim_user)  # type: ignore[arg-type]
        expected = sorted(w["workoutKey"] for w in served["workouts"])
        assert len(expected) == WORKOUTS
        assert await stored_ids(db, user_id) == expected  # none lost, none twice
    statuses = await db.fetch("SELECT status::text FROM sync_tasks")
    assert all(s["status"] in ("succeeded", "failed") for s in statuses), statuses


async def test_a_job_slot_is_not_lost_when_redis_fails_as_a_job_starts(settings: Settings, own_redis: OwnRedis) -> None:
    worker = create_worker(settings, max_jobs=1, handle_signals=False)
    worker._pool = await create_pool(worker.redis_settings, default_queue_name=settings.queue_name)
    try:
        await own_redis.stop()  # between reading the queue and claiming its first job
        with pytest.raises(redis.exceptions.ConnectionError):
            await worker.start_jobs([b"some-job"])
        assert worker.job_counter == 0
        assert not worker.sem.locked()  # the one slot is free for the next job
    finally:
        await worker.pool.aclose()


async def test_redis_lost_under_a_jobs_watch_is_an_outage_not_a_crash(
    settings: Settings, own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away after arq WATCHes the job's key: redis-py says WatchError; the worker takes
    it as the queue unavailable (and waits for it), with its slot back, instead of ending."""
    worker = create_worker(settings, max_jobs=1, handle_signals=False)
    worker._pool = await create_pool(worker.redis_settings, default_queue_name=settings.queue_name)
    watch = Pipeline.watch

    async def watch_then_lose_redis(self: Pipeline, *names: Any) -> Any:
        watched = await watch(self, *names)
        await own_redis.stop()
        return watched

    monkeypatch.setattr(Pipeline, "watch", watch_then_lose_redis)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="while watching"):
            await worker.start_jobs([b"some-job"])
        assert worker.job_counter == 0
        assert not worker.sem.locked()
    finally:
        await worker.pool.aclose()


async def test_webhook_events_in_flight_survive_a_redis_restart(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_server: TestServer,
    sim_state: SimState, own_redis: OwnRedis,
) -> None:  # fmt: skip
    """Strava announces activities; some are being fetched, the rest queued, when Redis restarts
    empty. The worker re-queues the pending events as it finds Redis empty: every activity
    stored, once. (A fetch that loses the rate limiter's Redis: test_webhook_retries.py.)"""
    retrying = settings.replace(webhook_retry_first_s=0, strava_rate_limits="100000/900")
    strava = sim_state.provider("strava")
    strava.rate_limits = [(100000, 900)]
    await subscribe(client, retrying)
    _, _, sim_user = await factory.connected_user("strava")
    async with WorkerProcess(retrying) as worker:
        strava.latency_s = 0.5  # fetches still in flight when Redis goes
        emitted = [await strava_emit(sim_server, sim_user, {"kind": "create"}) for _ in range(ACTIVITIES)]
        assert {e["delivery_status"] for e in emitted} == {200}
        await wait_until(lambda: db.fetchval("SELECT count(*) >= 2 FROM workouts"), "first activities stored")
        await own_redis.stop()
        await wait_until(lambda: worker.logged("the worker waits for it"), "the worker noticing", detail=worker.log)
        await own_redis.start()  # empty: every queued job is gone
        strava.latency_s = 0

        async def all_processed() -> bool:
            return bool(await db.fetchval("SELECT bool_and(status = 'processed') FROM webhook_events"))

        await wait_until(all_processed, "every event processed", detail=worker.log)
        assert await worker.logged("looking for lost tasks and webhook events"), worker.log()
    rows = await db.fetch("SELECT provider_record_id FROM workouts WHERE provider = 'strava'")
    assert sorted(r["provider_record_id"] for r in rows) == sorted(str(e["activity"]["id"]) for e in emitted)
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == ACTIVITIES


async def test_a_poll_iteration_that_fails_does_not_end_the_polling(
    settings: Settings, own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error arq's loop does not expect (here a Redis reply it cannot take) ended the worker's
    polling: the webhook worker, beside the main one in its process, went quiet with no one told.
    The worker logs it and polls on: a job queued meanwhile runs."""
    ran = asyncio.Event()

    async def job(ctx: dict[str, Any]) -> None:
        ran.set()

    worker = WearsyncWorker(functions=[func(job, name="job")], handle_signals=False, **worker_options(settings))
    failed = asyncio.Event()
    zrangebyscore = ArqRedis.zrangebyscore

    async def fails_once(self: ArqRedis, *args: Any, **kwargs: Any) -> Any:
        if not failed.is_set():
            failed.set()
            raise redis.exceptions.ResponseError("a reply the worker does not expect")
        return await zrangebyscore(self, *args, **kwargs)

    monkeypatch.setattr(ArqRedis, "zrangebyscore", fails_once)
    running = asyncio.create_task(worker.async_run())
    job_ran = asyncio.create_task(ran.wait())
    try:
        queue = await create_pool(worker.redis_settings, default_queue_name=settings.queue_name)
        await queue.enqueue_job("job")
        await queue.aclose()
        await asyncio.wait([running, job_ran], return_when=asyncio.FIRST_COMPLETED)
        assert failed.is_set()
        assert ran.is_set(), running
    finally:
        job_ran.cancel()
        await worker.close()
        await asyncio.gather(running, job_ran, return_exceptions=True)
