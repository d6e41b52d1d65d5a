"""PostgreSQL comes up after the worker and the API (a deploy, a restart of everything): each waits
for it, saying what it waits for, instead of exiting, and works once it is there; a SIGTERM while
they wait ends them at once, with exit code 0."""

import json
import signal
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import Factory, start_sync, stored_suunto_workouts_as_served, wait_for_task
from tests.faults.conftest import on_own_postgres
from tests.faults.servers import OwnPostgres, WorkerProcess
from tests.helpers import wait_until
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
WAITING = "database unavailable at start, waiting for it"


@pytest.fixture
def settings(settings: Settings, own_postgres: OwnPostgres) -> Settings:
    return on_own_postgres(settings, own_postgres)


def waits_logged(process: WorkerProcess) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in process.log().splitlines() if line.strip()]  # every line JSON
    return [line for line in lines if line["event"] == WAITING]


async def waited_thrice(process: WorkerProcess) -> bool:
    return len(waits_logged(process)) >= 3


def check_waits(process: WorkerProcess, pg: OwnPostgres) -> None:
    waits = waits_logged(process)
    assert {line["database"] for line in waits} == {f"{pg.folder}/wearsync"}  # no credentials
    pauses = [line["retry_in_s"] for line in waits]
    assert pauses == sorted(pauses)
    assert pauses[0] < pauses[-1]  # a growing pause
    assert process.alive, process.log()


async def test_a_worker_started_before_postgres_waits_for_it_then_syncs(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState,
    sim_server: TestServer, own_postgres: OwnPostgres,
) -> None:  # fmt: skip
    key, user_id, sim_user = await factory.connected_user("suunto")
    task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts")  # queued, no worker yet
    await own_postgres.stop("fast")
    async with WorkerProcess(settings) as worker:
        await wait_until(lambda: waited_thrice(worker), "three waits logged", detail=worker.log)
        check_waits(worker, own_postgres)
        await own_postgres.start()
        task = await wait_for_task(client, key, task_id)
        assert task["status"] == "succeeded", task
        assert await worker.logged("database available"), worker.log()
    await stored_suunto_workouts_as_served(db, sim_server, user_id, sim_user)


async def test_an_api_started_before_postgres_waits_for_it_then_serves(
    settings: Settings, own_postgres: OwnPostgres
) -> None:
    await own_postgres.stop("fast")
    async with WorkerProcess(settings, "api", "--port", "0") as api, aiohttp.ClientSession() as http:
        await wait_until(lambda: waited_thrice(api), "three waits logged", detail=api.log)
        check_waits(api, own_postgres)
        await own_postgres.start()
        url = await api.url()  # it listens once it has its database

        async def healthy() -> bool:
            try:
                async with http.get(f"{url}/health") as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:  # not listening until it has its database
                return False

        await wait_until(healthy, "serving", detail=api.log)


@pytest.mark.parametrize("command", [["worker"], ["api", "--port", "0"]])
async def test_a_sigterm_ends_a_process_waiting_for_postgres_with_exit_code_0(
    settings: Settings, own_postgres: OwnPostgres, command: list[str]
) -> None:
    await own_postgres.stop("fast")
    async with WorkerProcess(settings, *command) as process:
        await wait_until(lambda: process.logged(WAITING), "waiting for PostgreSQL", detail=process.log)
        assert process.process is not None
        process.send_signal(signal.SIGTERM)
        code = await process.exit_code()
    assert code == 0, process.log()
