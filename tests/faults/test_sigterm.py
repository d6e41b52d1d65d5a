"""SIGTERM (a deploy, a scale-down) to the real API and worker processes while work is in flight:
the API answers the requests it has with their normal response before it exits; the worker
stores the page in hand and hands the rest of its task to a new job, or, when a call will not
end within the grace period, gives its job back to the queue. Either way both exit within a
bounded time, and the task finishes elsewhere with every record stored once."""

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from tests.conftest import Factory, free_port, process_env, sim_records, start_sync, start_worker, wait_for_task
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]
Process = asyncio.subprocess.Process


@asynccontextmanager
async def wearsync(settings: Settings, *args: str) -> AsyncIterator[Process]:
    """`wearsync <args>` in a process of its own; killed at the end if still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", *args, env=process_env(settings),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def exit_code_within(process: Process, seconds: float) -> tuple[int, float]:
    """(exit code, seconds it took) of a process told to stop, which must exit within `seconds`."""
    started = time.monotonic()
    try:
        code = await asyncio.wait_for(process.wait(), seconds)
    except TimeoutError:
        raise AssertionError(f"still running {seconds} s after SIGTERM") from None
    return code, time.monotonic() - started


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    """Poll `check()` until it is true."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"not {what} after {timeout_s} s"
        await asyncio.sleep(0.05)


async def serving(http: aiohttp.ClientSession, base: str) -> bool:
    try:
        async with http.get(f"{base}/health") as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False


@asynccontextmanager
async def sync_call_to_api(
    settings: Settings, key: str, user_id: str, query: str = ""
) -> AsyncIterator[tuple[Process, "asyncio.Future[aiohttp.ClientResponse]"]]:
    """A `wearsync api` process with these settings, serving, and a sync call (async=false) of the
    user's Suunto workouts to it in flight."""
    port = free_port()
    async with wearsync(settings, "api", "--port", str(port)) as api, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{port}"
        await until(lambda: serving(http, base), "serving")
        url = f"{base}/api/v1/suunto/users/{user_id}/sync?async=false&data_type=workouts{query}"
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

        await until(running, "syncing")  # the request is in flight, its sync half done
        api.send_signal(signal.SIGTERM)
        resp = await asyncio.wait_for(request, 30)
        body = await resp.json()
        code, _ = await exit_code_within(api, 20)

    assert (resp.status, body["success"], body["details"]) == (200, True, {"workouts": True}), body
    assert code == 0
    served = await sim_records(sim_server, "suunto", sim_user)
    assert sorted(await stored_ids(db)) == sorted(w["workoutKey"] for w in served["workouts"])
    task = await wait_for_task(client, key, body["task_id"], timeout_s=1)
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
    api_settings = settings.model_copy(update={"shutdown_grace_s": grace, "http_timeout_s": 60})
    async with sync_call_to_api(api_settings, key, user_id) as (api, request):

        async def hung() -> bool:
            return hang.count == 0

        await until(hung, "calling upstream")
        api.send_signal(signal.SIGTERM)
        code, _ = await exit_code_within(api, grace + 10)
        cut_off = await asyncio.gather(request, return_exceptions=True)
    assert code == 0
    assert isinstance(cut_off[0], aiohttp.ClientError), cut_off  # no answer: the grace ran out

    row = await db.fetchrow("SELECT id, status::text, job_id FROM sync_tasks")
    assert row is not None
    assert row["status"] == "running"
    assert str(row["job_id"]).startswith(f"{row['id']}:"), "handed to a worker in a job of its own"
    async with start_worker(settings):
        task = await wait_for_task(client, key, str(row["id"]), timeout_s=60)
    assert task["status"] == "succeeded", task
    served = await sim_records(sim_server, "suunto", sim_user)
    assert sorted(await stored_ids(db)) == sorted(w["workoutKey"] for w in served["workouts"])


async def test_a_stopping_worker_stores_the_page_in_hand_and_hands_the_rest_on(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 600}
    sim_state.provider("suunto").latency_s = 0.2  # 60 pages, 4 at a time: some 3 s of calls
    # One job for the whole sync: the stop, not a page budget, is what cuts it.
    worker_settings = settings.model_copy(update={"job_max_pages": 0, "schedule_interval_s": 0,
                                                  "shutdown_grace_s": 20})  # fmt: skip
    async with wearsync(worker_settings, "worker") as worker:
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=10")

        async def under_way() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM workouts") >= 100)

        await until(under_way, "under way")
        worker.send_signal(signal.SIGTERM)
        code, took = await exit_code_within(worker, 20)
    assert code == 0
    assert took < 5, f"{took:.1f} s: it should stop after the page in hand, well before the grace ends"

    # It stopped mid-task, with its progress exactly what it stored, and the rest queued.
    row = await db.fetchrow("SELECT status::text, progress, job_id FROM sync_tasks WHERE id = $1::uuid", task_id)
    assert row is not None
    stored_when_stopped = len(await stored_ids(db))
    assert 100 <= stored_when_stopped < 600
    assert row["status"] == "running"
    assert row["progress"]["workouts"]["records"]["workouts"] == stored_when_stopped  # no page half written
    assert str(row["job_id"]).startswith(f"{task_id}:"), "a new job carries the rest"
    redis = Redis.from_url(settings.redis_url)
    try:
        assert await redis.zscore(settings.queue_name, row["job_id"]) is not None, "the new job is queued"
    finally:
        await redis.aclose()

    async with start_worker(settings):
        task = await wait_for_task(client, key, task_id, timeout_s=60)
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
    # The first list call hangs, for longer than the grace: the job has no page to store and stop at.
    hang = Fault("suunto", "/v3/workouts", "timeout")
    sim_state.faults.append(hang)
    grace = 2
    worker_settings = settings.model_copy(update={"job_max_pages": 0, "schedule_interval_s": 0, "http_timeout_s": 60,
                                                  "shutdown_grace_s": grace})  # fmt: skip
    async with wearsync(worker_settings, "worker") as worker:
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=50")

        async def hung() -> bool:
            return hang.count == 0

        await until(hung, "calling")
        worker.send_signal(signal.SIGTERM)
        code, took = await exit_code_within(worker, grace + 10)
    assert code == 0
    assert took >= grace - 0.5, "it waited for the job"

    async with start_worker(settings):
        task = await wait_for_task(client, key, task_id, timeout_s=60)
    assert task["status"] == "succeeded", task
    assert task["attempts"] == 2  # the stopped run, then the one that finished
    served = await sim_records(sim_server, "suunto", sim_user)
    assert sorted(await stored_ids(db)) == sorted(w["workoutKey"] for w in served["workouts"])
