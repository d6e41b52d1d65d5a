"""Redis comes up after the worker (a deploy, a restart of everything): the worker waits for it,
saying what it waits for, instead of exiting, and runs syncs once it is there; a SIGTERM while it
waits ends it at once, with exit code 0."""

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import Factory, start_sync, stored_suunto_workouts_as_served, wait_for_task
from tests.faults.servers import OwnRedis, WorkerProcess
from tests.helpers import wait_until
from wearsync.api.app import create_app
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
WAITING = "queue unavailable at start, the worker waits for it"


@pytest.fixture
async def late_redis() -> AsyncIterator[OwnRedis]:
    """A Redis of the test's own, not started: the test starts it when it wants it up."""
    redis = OwnRedis()
    yield redis
    await redis.stop()


@pytest.fixture
def settings(settings: Settings, late_redis: OwnRedis) -> Settings:
    return settings.model_copy(update={"redis_url": late_redis.url, "schedule_interval_s": 0})


def waits_logged(worker: WorkerProcess) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in worker.log().splitlines() if line.strip()]  # every line JSON
    return [line for line in lines if line["event"] == WAITING]


async def test_a_worker_started_before_redis_waits_for_it_then_syncs(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer,
    late_redis: OwnRedis,
) -> None:  # fmt: skip
    async with WorkerProcess(settings) as worker:

        async def waited_thrice() -> bool:
            return len(waits_logged(worker)) >= 3

        await wait_until(waited_thrice, "three waits logged", detail=worker.log)
        waits = waits_logged(worker)
        assert {line["redis"] for line in waits} == {f"{late_redis.socket}/0"}
        assert "No such file or directory" in waits[0]["error"]  # its socket is not there yet
        pauses = [line["retry_in_s"] for line in waits]
        assert pauses == sorted(pauses)
        assert pauses[0] < pauses[-1]  # a growing pause
        assert worker.alive, worker.log()

        await late_redis.start()
        client: Client = await aiohttp_client(create_app(settings))  # the API needs Redis to start
        key, user_id, sim_user = await Factory(client, db, settings).connected_user("suunto")
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts")
        task = await wait_for_task(client, key, task_id)
        assert task["status"] == "succeeded", task
        assert await worker.logged("queue available, the worker starts"), worker.log()

    await stored_suunto_workouts_as_served(db, sim_server, user_id, sim_user)


async def test_a_sigterm_ends_a_worker_waiting_for_redis_with_exit_code_0(settings: Settings) -> None:
    async with WorkerProcess(settings) as worker:
        await wait_until(lambda: worker.logged(WAITING), "waiting for Redis", detail=worker.log)
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.process.wait(), 10)
    assert code == 0, worker.log()
    assert waits_logged(worker)
