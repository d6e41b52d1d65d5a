"""SIGTERM (a deploy, a scale-down) to the real API and worker processes while work is in flight:
the API answers the requests it has with their normal response before it exits; the worker
stores the page in hand and hands the rest of its task to a new job, or, when a call will not
end within the grace period, gives its job back to the queue. Either way both exit within a
bounded time, and the task finishes elsewhere with every record stored once."""

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from tests.conftest import Factory, run_queued, sim_records, start_sync, wait_for_task
from tests.faults.servers import WorkerProcess
from tests.helpers import wait_until
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]


@asynccontextmanager
async def sync_call_to_api(
    settings: Settings, key: str, user_id: str, query: str = ""
) -> AsyncIterator[tuple[WorkerProcess, "asyncio.Future[aiohttp.ClientResponse]"]]:
    """A `wearsync api` process with these settings, serving on a port of its choosing, and a sync
    call (async=false) of the user's Suunto workouts to it in flight."""
    async with WorkerProcess(settings, "api", "--port", "0") as api, aiohttp.ClientSession() as http:
        url = f"{await api.url()}/api/v1/suunto/users/{user_id}/sync?async=false&data_type=workouts{query}"
        yield api, asyncio.ensure_future(http.post(url, headers={"X-API-Key": key}))


async def stored_ids(db: asyncpg.Pool) -> list[str]:
    return [r["provider_record_id"] for r in await db.fetch("SELECT provider_record_id FROM workouts")]


async def test_the_api_answers_the_request_in_flight_then_exits(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 200}
    sim_state.provider("suunto").latency_s = 0.2  # a sync-mode request of a few seconds
    api_settings = settings.model_copy(update={"shutdown_grace_s": 20})
    async with sync_call_to_api(api_settings, key, user_id, "&limit=10") as (api, request):

        async def running() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM workouts"))

        await wait_until(running, "syncing", detail=api.log)  # the request is in flight, its sync half done
        api.send_signal(signal.SIGTERM)
        resp = await request
        body = await resp.json()
        code = await api.exit_code()

    assert (resp.status, body["success"], body["details"]) == (200, True, {"workouts": True}), body
    assert code == 0
    served = await sim_records(sim_server, "suunto", sim_user)
    assert sorted(await stored_ids(db)) == sorted(w["workoutKey"] for w in served["workouts"])
    task = await wait_for_task(client, key, body["task_id"])
    assert task["status"] == "succeeded", task


# A grace too short for the hand-over itself (its database update and enqueue) too.
@pytest.mark.parametrize("grace", [1, 0.01])
async def test_a_sync_request_outlasting_the_grace_is_handed_to_a_worker(
    grace: float,
    client: Client,
    factory: Factory,
    settings: Settings,
    db: asyncpg.Pool,
    sim_state: SimState,
    sim_server: TestServer,
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 120}
    hang = Fault("suunto", "/v3/workouts", "timeout")  # the first list call hangs, past the grace
    sim_state.faults.append(hang)
    api_settings = settings.model_copy(update={"shutdown_grace_s": grace, "http_timeout_s": 3600})
    async with sync_call_to_api(api_settings, key, user_id) as (api, request):

        async def hung() -> bool:
            return hang.count == 0

        await wait_until(hung, "calling upstream", detail=api.log)
        api.send_signal(signal.SIGTERM)
        code = await api.exit_code()  # long before the hung call's own timeout
        cut_off = await asyncio.gather(request, return_exceptions=True)
    assert code == 0
    assert isinstance(cut_off[0], aiohttp.ClientError), cut_off  # no answer: the grace ran out

    row = await db.fetchrow("SELECT id, status::text, job_id FROM sync_tasks")
    assert row is not None
    assert row["status"] == "running"
    assert str(row["job_id"]).startswith(f"{row['id']}:"), "handed to a worker in a job of its own"
    await run_queued(settings)  # what is queued: the rest of the task
    task = await wait_for_task(client, key, str(row["id"]))
    assert task["status"] == "succeeded", task
    served = await sim_records(sim_server, "suunto", sim_user)
    assert sorted(await stored_ids(db)) == sorted(w["workoutKey"] for w in served["workouts"])


async def test_a_stopping_worker_stores_the_page_in_hand_and_hands_the_rest_on(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 600}
    # Ten pages come back at once; the eleventh is held until the worker has been told to stop.
    held = Fault("suunto", "/v3/workouts", "hold", skip=10)
    sim_state.faults.append(held)
    # One job for the whole sync: the stop, not a page budget, is what cuts it.
    worker_settings = settings.model_copy(update={"job_max_pages": 0, "schedule_interval_s": 0,
                                                  "shutdown_grace_s": 20})  # fmt: skip
    async with WorkerProcess(worker_settings, "worker") as worker:
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=10")

        async def holding() -> bool:
            return held.count == 0

        await wait_until(holding, "a page held", detail=worker.log)
        worker.send_signal(signal.SIGTERM)
        await wait_until(lambda: worker.logged("allow_pick_jobs"), "the worker stopping", detail=worker.log)
        held.released.set()
        code = await worker.exit_code()  # long before the grace (20 s) would cancel the job
    assert code == 0

    # It stopped mid-task, with its progress exactly what it stored, and the rest queued in a new
    # job (a job cancelled when the grace ran out would be its old one, given back).
    row = await db.fetchrow("SELECT status::text, progress, job_id FROM sync_tasks WHERE id = $1::uuid", task_id)
    assert row is not None
    stored_when_stopped = len(await stored_ids(db))
    assert 0 < stored_when_stopped < 600
    assert row["status"] == "running"
    assert row["progress"]["workouts"]["records"]["workouts"] == stored_when_stopped  # no page half written
    assert str(row["job_id"]).startswith(f"{task_id}:"), "a new job carries the rest"
    redis = Redis.from_url(settings.redis_url)
    try:
        assert await redis.zscore(settings.queue_name, row["job_id"]) is not None, "the new job is queued"
    finally:
        await redis.aclose()

    await run_queued(settings)  # what is queued: the rest of the task
    task = await wait_for_task(client, key, task_id)
    assert task["status"] == "succeeded", task
    assert task["attempts"] == 2
    served = await sim_records(sim_server, "suunto", sim_user)
    assert sorted(await stored_ids(db)) == sorted(w["workoutKey"] for w in served["workouts"])  # each once
    assert task["progress"]["workouts"]["records"] == {"workouts": 600}


async def test_a_job_stuck_in_a_call_is_given_back_when_the_grace_ends(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 300}
    # The first list call hangs, for longer than the grace (the call's own timeout is an hour): the
    # job has no page to store and stop at.
    hang = Fault("suunto", "/v3/workouts", "timeout")
    sim_state.faults.append(hang)
    grace = 2
    worker_settings = settings.model_copy(update={"job_max_pages": 0, "schedule_interval_s": 0,
                                                  "http_timeout_s": 3600, "shutdown_grace_s": grace})  # fmt: skip
    async with WorkerProcess(worker_settings, "worker") as worker:
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=50")

        async def hung() -> bool:
            return hang.count == 0

        await wait_until(hung, "calling", detail=worker.log)
        worker.send_signal(signal.SIGTERM)
        stopped = asyncio.get_running_loop().time()
        code = await worker.exit_code()  # the grace, not the hung call's hour
        took = asyncio.get_running_loop().time() - stopped
    assert code == 0
    assert took >= grace - 0.5, "it waited for the job"

    await run_queued(settings)  # what is queued: the rest of the task
    task = await wait_for_task(client, key, task_id)
    assert task["status"] == "succeeded", task
    assert task["attempts"] == 2  # the stopped run, then the one that finished
    served = await sim_records(sim_server, "suunto", sim_user)
    assert sorted(await stored_ids(db)) == sorted(w["workoutKey"] for w in served["workouts"])
